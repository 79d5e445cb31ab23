package realtime

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/stretchr/testify/require"
)

func configDefaults() config.HTTPTransport { return config.Defaults().HTTPTransport }

func TestKeyFor(t *testing.T) {
	k := func(coll, action, rec string) Key { return mustKey(t, coll, action, rec) }
	base := k("investigations", "create", invRecord)

	require.Equal(t, base, k("investigations", "create", " \n"+invRecord+"\n"), "spacing does not matter")
	require.Equal(t, base, k("investigations", "create",
		`{"user_prompt":"Disk is full on /var partition","user_id":"l10t7rpxbb0823e","status":"pending","resolution_plan":"","priority":"high","metadata":{"initiated_by":"user"},"initiated_at":"2026-11-26 00:51:01.776Z","id":"dmi5fzdb3mugwkh","episode_id":"","completed_at":"","collectionName":"investigations","collectionId":"pbc_59972043","agent_id":"brppshbc1nycil4"}`),
		"field order does not matter")
	require.NotEqual(t, base, k("investigations", "update", invRecord), "the action is part of the key")
	require.NotEqual(t, base, k("patch_operations", "create", invRecord), "the collection is part of the key")
	require.NotEqual(t, base, k("investigations", "create", invUpdated), "a changed record is a new delivery")

	// Where the collection has an "updated" field, it alone is the version.
	a := k("c", "update", `{"id":"r1","updated":"2026-11-26 00:51:01.776Z","x":1}`)
	require.Equal(t, a, k("c", "update", `{"id":"r1","updated":"2026-11-26 00:51:01.776Z","x":2}`))
	require.NotEqual(t, a, k("c", "update", `{"id":"r1","updated":"2026-11-26 00:51:02.000Z","x":1}`))

	// Numbers are compared exactly, not as float64.
	require.NotEqual(t,
		k("c", "create", `{"id":"r","n":9007199254740993}`),
		k("c", "create", `{"id":"r","n":9007199254740992}`))

	require.NotEqual(t, NewKey("ab", "c", "", ""), NewKey("a", "bc", "", ""))

	for _, bad := range []string{`{}`, `{"id":""}`, `{"id":5}`, `[]`, `nul`, `{"id":"x"} {}`, `null`} {
		_, err := KeyFor("c", "create", json.RawMessage(bad))
		require.Error(t, err, bad)
	}
}

func TestDedupWindow(t *testing.T) {
	d := NewDedup(3)
	key := func(i int) Key { return NewKey("c", fmt.Sprint(i), "create", "") }
	require.True(t, d.Add(key(1)))
	require.True(t, d.Add(key(2)))
	require.False(t, d.Add(key(1)), "1 seen; it becomes the most recent")
	require.True(t, d.Add(key(3)))
	require.True(t, d.Add(key(4)), "evicts 2, the least recently seen")
	require.Equal(t, 3, d.Len())
	require.False(t, d.Add(key(1)))
	require.False(t, d.Add(key(3)))
	require.False(t, d.Add(key(4)))
	require.True(t, d.Add(key(2)), "2 was evicted")
	d.Forget(key(2))
	require.Equal(t, 2, d.Len())
	require.True(t, d.Add(key(2)), "forgotten keys are new again")
	d.Forget(key(99))
	require.Equal(t, 3, d.Len())
	require.Equal(t, DefaultDedupSize, NewDedup(0).size)
}

func TestDedupConcurrent(t *testing.T) {
	d := NewDedup(1 << 12)
	var wg sync.WaitGroup
	var mu sync.Mutex
	firsts := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := 0; i < 1000; i++ {
				if d.Add(NewKey("c", fmt.Sprint(i), "create", "")) {
					n++
				}
			}
			mu.Lock()
			firsts += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.Equal(t, 1000, firsts, "each key is new exactly once across goroutines")
}

func BenchmarkKeyFor(b *testing.B) {
	rec := json.RawMessage(invRecord)
	for b.Loop() {
		if _, err := KeyFor("investigations", "create", rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	frame := []byte(recordFrame("3Q9p3JXpOjM6TXUsW6KWXsBR0hTEZMXQyRZLgnUm", "investigations", "create", invRecord))
	p := NewParser(Limits{})
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if err := p.Feed(frame, func(Message) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add("investigations", `{"record":`+invRecord+`,"action":"create"}`)
	f.Add("reboot_operations", `{"record":{"id":"x","updated":"2026-11-26 00:51:01.776Z"},"action":"update"}`)
	f.Add("patch_operations", `{"record":{"id":7},"action":"create"}`)
	f.Add("PB_CONNECT", `{"clientId":"abc"}`)
	f.Fuzz(func(t *testing.T, typ, data string) {
		ev, err := decodeEvent(Message{Type: typ, Data: data})
		if err != nil {
			return
		}
		require.True(t, validActions[ev.Action])
		require.NotEmpty(t, ev.ID)
		require.Equal(t, typ, ev.Collection)
		k, err := KeyFor(typ, ev.Action, ev.Record)
		require.NoError(t, err)
		require.Equal(t, k, ev.Key, "the stream's key is the one catch-up computes")
	})
}
