package realtime

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// parseAll feeds s whole and returns the messages and the error.
func parseAll(t testing.TB, s string, l Limits) ([]Message, error) {
	t.Helper()
	var got []Message
	err := Parse(strings.NewReader(s), l, func(m Message) error {
		got = append(got, m)
		return nil
	})
	return got, err
}

func msg(id, typ, data string) Message { return Message{LastEventID: id, Type: typ, Data: data} }

func TestParseWHATWG(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []Message
		err  error
	}{
		{
			// The PocketBase framing of §2.3: no space after the colons.
			name: "pocketbase PB_CONNECT",
			in:   "id:3Q9p3JXpOjM6TXUsW6KWXsBR0hTEZMXQyRZLgnUm\nevent:PB_CONNECT\ndata:{\"clientId\":\"3Q9p3JXpOjM6TXUsW6KWXsBR0hTEZMXQyRZLgnUm\"}\n\n",
			want: []Message{msg("3Q9p3JXpOjM6TXUsW6KWXsBR0hTEZMXQyRZLgnUm", "PB_CONNECT", `{"clientId":"3Q9p3JXpOjM6TXUsW6KWXsBR0hTEZMXQyRZLgnUm"}`)},
		},
		{
			// The standard's stock-ticker example: data lines joined by LF.
			name: "multi-line data",
			in:   "data: YHOO\ndata: +2\ndata: 10\n\n",
			want: []Message{msg("", "message", "YHOO\n+2\n10")},
		},
		{
			// The standard's example with a comment, ids and an unterminated
			// last event, which is never dispatched.
			name: "comment, id reset, unterminated last event",
			in:   ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n",
			want: []Message{msg("1", "message", "first event"), msg("", "message", "second event")},
			err:  ErrTruncated,
		},
		{
			// The standard's example: a lone "data" line is an empty data
			// line; the stream's final "data:" has no blank line after it.
			name: "bare field names",
			in:   "data\n\ndata\ndata\n\ndata:",
			want: []Message{msg("", "message", ""), msg("", "message", "\n")},
			err:  ErrTruncated,
		},
		{
			name: "only one leading space is removed",
			in:   "data:test\n\ndata: test\n\ndata:  test\n\n",
			want: []Message{msg("", "message", "test"), msg("", "message", "test"), msg("", "message", " test")},
		},
		{
			name: "CRLF, CR and LF line endings mixed",
			in:   "event:a\r\ndata:1\r\n\r\nevent:b\rdata:2\r\rdata:3\n\r\n",
			want: []Message{msg("", "a", "1"), msg("", "b", "2"), msg("", "message", "3")},
		},
		{
			name: "one leading BOM stripped, a second kept in the field name",
			in:   "\uFEFFdata:a\n\n\uFEFFdata:b\n\ndata:c\n\n",
			want: []Message{msg("", "message", "a"), msg("", "message", "c")},
		},
		{
			name: "BOM later in the stream is data",
			in:   "data:\uFEFFx\n\n",
			want: []Message{msg("", "message", "\uFEFFx")},
		},
		{
			name: "event type resets after dispatch, even with no data",
			in:   "event:x\n\ndata:1\n\nevent:y\ndata:2\n\ndata:3\n\n",
			want: []Message{msg("", "message", "1"), msg("", "y", "2"), msg("", "message", "3")},
		},
		{
			name: "last event id persists; an id with NUL is ignored",
			in:   "id:7\ndata:a\n\ndata:b\n\nid:8\x00\ndata:c\n\nid:\ndata:d\n\n",
			want: []Message{msg("7", "message", "a"), msg("7", "message", "b"), msg("7", "message", "c"), msg("", "message", "d")},
		},
		{
			name: "unknown fields, retry and colonless lines",
			in:   "foo:bar\nretry:1000\nDATA:x\ndata\n\n",
			want: []Message{msg("", "message", "")},
		},
		{
			name: "field value may contain colons",
			in:   "data:a:b: c\n\n",
			want: []Message{msg("", "message", "a:b: c")},
		},
		{
			name: "a comment does not open an event",
			in:   "data:x\n\n:keep-alive\n",
			want: []Message{msg("", "message", "x")},
		},
		{
			name: "invalid UTF-8 becomes U+FFFD per maximal subpart",
			// E2 82 is one truncated sequence; F0 80 is a lead byte whose
			// next byte is out of range, so two; ED A0 80 is a surrogate,
			// so three.
			in:   "data:a\xE2\x82b\xF0\x80c\xED\xA0\x80d\xFFe\n\n",
			want: []Message{msg("", "message", "a\uFFFDb\uFFFD\uFFFDc\uFFFD\uFFFD\uFFFDd\uFFFDe")},
		},
		{
			name: "empty stream",
			in:   "",
		},
		{
			name: "stream of blank lines",
			in:   "\n\n\r\n\r",
		},
		{
			name: "half-written event at the end is not dispatched",
			in:   "id:c\nevent:investigations\ndata:{\"record\":{\"id\":\"a\"},\"action\":\"create\"}\n\nid:c\nevent:investigations\ndata:{\"rec",
			want: []Message{msg("c", "investigations", `{"record":{"id":"a"},"action":"create"}`)},
			err:  ErrTruncated,
		},
		{
			name: "complete fields without the blank line are not dispatched",
			in:   "data:x\n",
			err:  ErrTruncated,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseAll(t, tc.in, Limits{})
			require.Equal(t, tc.want, got)
			require.ErrorIs(t, err, tc.err)
			if tc.err == nil {
				require.NoError(t, err)
			}
			// Byte-at-a-time reading must give the same.
			var one []Message
			err = Parse(iotest.OneByteReader(strings.NewReader(tc.in)), Limits{}, func(m Message) error {
				one = append(one, m)
				return nil
			})
			require.Equal(t, tc.want, one)
			require.ErrorIs(t, err, tc.err)
		})
	}
}

func TestParseRetry(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"retry:1500\n", 1500 * time.Millisecond, true},
		{"retry: 0\n", 0, true},
		{"retry:15s\n", 0, false},
		{"retry:-1\n", 0, false},
		{"retry:\n", 0, false},
		{"retry: 1 2\n", 0, false},
		{"retry:99999999999999999999999\n", 0, false},
		{"retry:1000\nretry:x\n", time.Second, true},
	} {
		p := NewParser(Limits{})
		require.NoError(t, p.Feed([]byte(tc.in), func(Message) error { return nil }))
		d, ok := p.Retry()
		require.Equal(t, tc.ok, ok, tc.in)
		require.Equal(t, tc.want, d, tc.in)
	}
}

func TestParseCRLFSplitAcrossChunks(t *testing.T) {
	// A CR ending one chunk and an LF starting the next are one line end,
	// not a line end followed by a blank line that would dispatch early.
	p := NewParser(Limits{})
	var got []Message
	emit := func(m Message) error { got = append(got, m); return nil }
	require.NoError(t, p.Feed([]byte("data:a\r"), emit))
	require.NoError(t, p.Feed([]byte("\ndata:b\r"), emit))
	require.NoError(t, p.Feed([]byte("\n\r"), emit))
	require.Equal(t, []Message{msg("", "message", "a\nb")}, got)
	require.False(t, p.Pending())
	require.NoError(t, p.Feed([]byte("\n"), emit), "the LF of the last CRLF")
	require.Len(t, got, 1)
}

func TestParseBOMSplitAcrossChunks(t *testing.T) {
	for _, chunks := range [][]string{
		{"\xEF", "\xBB", "\xBFdata:x\n\n"},
		{"\xEF\xBB", "\xBFdata:x\n\n"},
	} {
		p := NewParser(Limits{})
		var got []Message
		for _, c := range chunks {
			require.NoError(t, p.Feed([]byte(c), func(m Message) error { got = append(got, m); return nil }))
		}
		require.Equal(t, []Message{msg("", "message", "x")}, got)
	}
	// A partial BOM is data: "\xEF\xBB" then "x" is one invalid sequence
	// (EF BB is a truncated three-byte sequence) then x, in a field name.
	got, err := parseAll(t, "\xEF\xBBdata:x\n\ndata:y\n\n", Limits{})
	require.NoError(t, err)
	require.Equal(t, []Message{msg("", "message", "y")}, got)
	p := NewParser(Limits{})
	require.NoError(t, p.Feed([]byte("\xEF\xBB"), nil))
	require.True(t, p.Pending(), "an undecided BOM is a partial line")
}

func TestParseLimits(t *testing.T) {
	l := Limits{MaxLineBytes: 16, MaxEventBytes: 24}
	for _, tc := range []struct {
		name  string
		in    string
		limit string
		want  []Message
	}{
		{"line exactly at the limit", "data:0123456789a\n\n", "", []Message{msg("", "message", "0123456789a")}},
		{"line one byte over", "data:0123456789ab\n\n", "MaxLineBytes", nil},
		{"unterminated line over", "data:x\n\n" + strings.Repeat(":", 17), "MaxLineBytes", []Message{msg("", "message", "x")}},
		{"comment line over", ":" + strings.Repeat("c", 16) + "\n", "MaxLineBytes", nil},
		// 4 data lines of 5 bytes + 4 LFs = 24 bytes: at the limit.
		{"event at the limit", strings.Repeat("data:abcde\n", 4) + "\n", "", []Message{msg("", "message", "abcde\nabcde\nabcde\nabcde")}},
		{"event over", strings.Repeat("data:abcde\n", 5) + "\n", "MaxEventBytes", nil},
		{"type counts toward the event", "event:abcdefghij\n" + strings.Repeat("data:abcde\n", 3) + "\n", "MaxEventBytes", nil},
		{"events are bounded one by one", strings.Repeat("data:abcde\ndata:abcde\n\n", 50), "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseAll(t, tc.in, l)
			if tc.limit == "" {
				require.NoError(t, err)
				if tc.want != nil {
					require.Equal(t, tc.want, got)
				} else {
					require.Len(t, got, 50)
				}
				return
			}
			var le *LimitError
			require.ErrorAs(t, err, &le)
			require.Equal(t, tc.limit, le.Limit)
			require.Contains(t, err.Error(), "(limit "+tc.limit+")")
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseEmitErrorStops(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := Parse(strings.NewReader("data:1\n\ndata:2\n\ndata:3\n\n"), Limits{}, func(Message) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 2, n)
}

func TestParseReaderError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("data:1\n\ndata:2"), iotest.ErrReader(boom))
	var got []Message
	err := Parse(r, Limits{}, func(m Message) error { got = append(got, m); return nil })
	require.ErrorIs(t, err, boom)
	require.Equal(t, []Message{msg("", "message", "1")}, got)
}

// A hostile server's megabytes of one line are refused after the limit:
// the parser holds no more than MaxLineBytes of it.
func TestParseHostileLongLineBounded(t *testing.T) {
	p := NewParser(Limits{MaxLineBytes: 1 << 16})
	chunk := bytes.Repeat([]byte("d"), 4096)
	var err error
	fed := 0
	for fed = 0; fed < 64<<20 && err == nil; fed += len(chunk) {
		err = p.Feed(chunk, func(Message) error { return nil })
	}
	require.ErrorContains(t, err, "sse: line longer than 65536 bytes (limit MaxLineBytes)")
	require.Equal(t, 1<<16+4096, fed, "stopped at the first chunk past the limit")
	require.LessOrEqual(t, cap(p.line), 1<<17)
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"id:3Q9p\nevent:PB_CONNECT\ndata:{\"clientId\":\"3Q9p\"}\n\n",
		"data: YHOO\ndata: +2\ndata: 10\n\n",
		": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n",
		"\uFEFFevent:a\r\ndata:1\r\n\r\nevent:b\rdata:2\r\r",
		"\xEF\xBB\xBF\xEF\xBBdata\n\n",
		"retry:1000\nid:\x00\ndata:\xE2\x82\xF0\x80\n\n",
		"data:0123456789abcdefghij\n\n",
		"event:investigations\ndata:{\"record\":{\"id\":\"x\"},\"action\":\"create\"}\n\ndata:{\"rec",
	} {
		f.Add([]byte(s), uint64(1))
	}
	f.Fuzz(func(t *testing.T, in []byte, seed uint64) {
		l := Limits{MaxLineBytes: 64, MaxEventBytes: 96}
		collect := func(chunks [][]byte) ([]Message, error, bool, Parser) {
			p := NewParser(l)
			var got []Message
			emit := func(m Message) error {
				got = append(got, m)
				return nil
			}
			for _, c := range chunks {
				if err := p.Feed(c, emit); err != nil {
					return got, err, p.Pending(), *p
				}
			}
			return got, nil, p.Pending(), *p
		}
		whole, werr, wpend, wp := collect([][]byte{in})
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		var chunks [][]byte
		for rest := in; len(rest) > 0; {
			n := 1 + r.IntN(len(rest))
			if r.IntN(3) == 0 {
				n = 1
			}
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		split, serr, spend, sp := collect(chunks)
		require.Equal(t, whole, split, "chunking changed the messages")
		require.Equal(t, werr, serr, "chunking changed the error")
		if werr == nil {
			require.Equal(t, wpend, spend)
			require.Equal(t, wp.lastID, sp.lastID)
			require.Equal(t, wp.retry, sp.retry)
		}
		for _, m := range whole {
			require.LessOrEqual(t, len(m.Data)+len(m.Type), l.MaxEventBytes+len("message"))
			require.True(t, utf8.ValidString(m.Data) && utf8.ValidString(m.Type) && utf8.ValidString(m.LastEventID))
			require.NotContains(t, m.LastEventID, "\x00")
			require.NotEmpty(t, m.Type)
		}
	})
}
