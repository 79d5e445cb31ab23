package catalog

import (
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Session's contract without a kernel: one stop, collect before close,
// Seen never counting from closed maps, errors named by entry and step.
func TestSessionStop(t *testing.T) {
	var steps []string
	s := &Session{Entry: "x", Params: Params{PID: 7}, Attach: "tracepoint"}
	s.Objects = CloseFunc(func() error { steps = append(steps, "close"); return nil })
	s.Count = func() uint64 { return 5 }
	s.Collect = func() (*Result, error) {
		steps = append(steps, "collect")
		return &Result{Entry: "x", Events: 9, Lost: 1}, errors.New("read counts: boom")
	}
	s.Begin()
	assert.Equal(t, uint64(5), s.Seen())

	res, err := s.Stop()
	require.ErrorContains(t, err, "x: stop: read counts: boom")
	assert.Equal(t, []string{"collect", "close"}, steps)
	assert.Equal(t, "tracepoint", res.Attach)
	assert.Equal(t, uint64(1), res.Lost)
	assert.False(t, res.End.Before(res.Start))
	assert.Equal(t, uint64(9), s.Seen(), "after Stop, Seen is the result's count")

	again, err2 := s.Stop()
	assert.Same(t, res, again)
	assert.Equal(t, err, err2)
	assert.Equal(t, []string{"collect", "close"}, steps, "nothing runs twice")
}

func TestSessionAbortClosesOnce(t *testing.T) {
	closed := 0
	s := &Session{Entry: "x"}
	s.Objects = CloseFunc(func() error { closed++; return nil })
	s.Count = func() uint64 { t.Fatal("Count after Abort"); return 0 }
	s.Abort()
	s.Abort()
	assert.Equal(t, 1, closed)
	assert.Zero(t, s.Seen())
}

func TestRecordsCountsMalformed(t *testing.T) {
	type rec struct{ A, B uint32 }
	var mu sync.Mutex
	var bad uint64
	var got []rec
	h := Records(&mu, &bad, func(r *rec) { got = append(got, *r) })
	h([]byte{1, 0, 0, 0, 2, 0, 0, 0})
	h([]byte{1, 2, 3})
	assert.Equal(t, []rec{{1, 2}}, got)
	assert.Equal(t, uint64(1), bad)
}
