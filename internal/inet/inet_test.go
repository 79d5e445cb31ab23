package inet

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf/btf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEndpoint(t *testing.T) {
	v4 := [16]byte{10: 0xff, 11: 0xff, 12: 127, 15: 1}
	assert.Equal(t, "127.0.0.1:80", Endpoint(v4, 80))
	v6 := [16]byte{15: 1}
	assert.Equal(t, "[::1]:443", Endpoint(v6, 443))
	assert.Equal(t, "[::]:0", Endpoint([16]byte{}, 0))
}

func TestTCPState(t *testing.T) {
	assert.Equal(t, "ESTABLISHED", TCPState(1))
	assert.Equal(t, "NEW_SYN_RECV", TCPState(12))
	assert.Equal(t, "-", TCPState(0))
	assert.Equal(t, "state 99", TCPState(99))
}

func TestKernelEnum(t *testing.T) {
	enum := &btf.Enum{Name: "skb_drop_reason", Size: 4, Values: []btf.EnumValue{
		{Name: "SKB_NOT_DROPPED_YET", Value: 0}, {Name: "SKB_DROP_REASON_NO_SOCKET", Value: 3}}}
	var b btf.Builder
	_, err := b.Add(enum)
	require.NoError(t, err)
	raw, err := b.Marshal(nil, nil)
	require.NoError(t, err)
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	require.NoError(t, err)
	e, err := KernelEnum(spec, "skb_drop_reason", "SKB_DROP_REASON_")
	require.NoError(t, err)
	assert.Equal(t, "NO_SOCKET", e.Name(3))
	assert.Equal(t, "SKB_NOT_DROPPED_YET", e.Name(0))
	assert.Equal(t, "77", e.Name(77))
	v, ok := e.Value("NO_SOCKET")
	assert.True(t, ok)
	assert.Equal(t, uint64(3), v)
	_, err = KernelEnum(spec, "sk_rst_reason", "")
	assert.Error(t, err)
	_, err = KernelEnum(nil, "x", "")
	assert.Error(t, err)
}

func TestConnOf(t *testing.T) {
	a, b := [16]byte{15: 1}, [16]byte{15: 2}
	assert.Equal(t, ConnOf(a, 80, b, 40000), ConnOf(b, 40000, a, 80))
	assert.Equal(t, ConnOf(a, 80, a, 40000), ConnOf(a, 40000, a, 80))
	assert.NotEqual(t, ConnOf(a, 80, a, 40000), ConnOf(a, 81, a, 40000))
}
