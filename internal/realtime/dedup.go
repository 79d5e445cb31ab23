package realtime

import (
	"bytes"
	"container/list"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// Key identifies one delivery of a record: collection, record id, action
// and the record's version. It is a digest, so a window of keys costs the
// same memory whatever the server puts in the records.
type Key [sha256.Size]byte

// NewKey builds a key from its parts.
func NewKey(collection, id, action, version string) Key {
	h := sha256.New()
	for _, s := range []string{collection, id, action, version} {
		// Length prefixes keep ("ab","c") and ("a","bc") apart.
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	var k Key
	h.Sum(k[:0])
	return k
}

// KeyFor is the key of a record as the stream or the records API gives it
// (the records API returns the same record JSON as the stream, §2.11).
// The version is the record's "updated" timestamp where the collection
// has one; the agent's collections have none (§1), so it is then a digest
// of the record's content: the same record seen live and again at
// catch-up has one key, and a changed record a new one. Catch-up should
// offer its pending records with action "create", the event that made
// them pending.
func KeyFor(collection, action string, record json.RawMessage) (Key, error) {
	id, version, err := recordIdentity(record)
	if err != nil {
		return Key{}, fmt.Errorf("record of %q: %w", collection, err)
	}
	return NewKey(collection, id, action, version), nil
}

// recordIdentity returns the record's id and a version string for Key.
func recordIdentity(record json.RawMessage) (id, version string, err error) {
	var r struct {
		ID      *string `json:"id"`
		Updated string  `json:"updated"`
	}
	if err := json.Unmarshal(record, &r); err != nil {
		return "", "", err
	}
	if r.ID == nil || *r.ID == "" {
		return "", "", errors.New("no id")
	}
	if r.Updated != "" {
		return *r.ID, "updated:" + r.Updated, nil
	}
	sum, err := contentDigest(record)
	if err != nil {
		return "", "", err
	}
	return *r.ID, "content:" + string(sum[:]), nil
}

// contentDigest hashes the record re-encoded with sorted keys and exact
// numbers, so that field order and spacing do not make two copies of one
// record look different.
func contentDigest(record json.RawMessage) ([sha256.Size]byte, error) {
	d := json.NewDecoder(bytes.NewReader(record))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return [sha256.Size]byte{}, err
	}
	if d.More() {
		return [sha256.Size]byte{}, errors.New("trailing data after the record")
	}
	canon, err := json.Marshal(v)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(canon), nil
}

// DefaultDedupSize is the window of a Dedup made with size 0: far more
// records than a backend pushes to one agent between two catch-ups.
const DefaultDedupSize = 4096

// Dedup remembers the most recent keys, up to a fixed number, so that a
// record delivered twice (live and by catch-up, or twice by a server) is
// acted on once. It is safe for concurrent use, so the client and the
// daemon's catch-up can share one.
type Dedup struct {
	mu    sync.Mutex
	size  int
	order *list.List // front = most recently seen
	index map[Key]*list.Element
}

// NewDedup returns a window of size keys (DefaultDedupSize when size <= 0).
func NewDedup(size int) *Dedup {
	if size <= 0 {
		size = DefaultDedupSize
	}
	return &Dedup{size: size, order: list.New(), index: make(map[Key]*list.Element, size)}
}

// Add records k and reports whether it is new. A key seen again moves to
// the front of the window.
func (d *Dedup) Add(k Key) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.index[k]; ok {
		d.order.MoveToFront(e)
		return false
	}
	if d.order.Len() >= d.size {
		oldest := d.order.Back()
		d.order.Remove(oldest)
		delete(d.index, oldest.Value.(Key))
	}
	d.index[k] = d.order.PushFront(k)
	return true
}

// Forget drops k, for a delivery whose handling failed and should run
// again when the record comes back.
func (d *Dedup) Forget(k Key) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.index[k]; ok {
		d.order.Remove(e)
		delete(d.index, k)
	}
}

// Len is the number of keys held.
func (d *Dedup) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.order.Len()
}
