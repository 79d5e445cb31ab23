package catalog

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf/btf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEnumFromBTF(t *testing.T) {
	enum := &btf.Enum{Name: "skb_drop_reason", Size: 4, Values: []btf.EnumValue{
		{Name: "SKB_NOT_DROPPED_YET", Value: 0}, {Name: "SKB_DROP_REASON_NO_SOCKET", Value: 3}}}
	var b btf.Builder
	_, err := b.Add(enum)
	require.NoError(t, err)
	raw, err := b.Marshal(nil, nil)
	require.NoError(t, err)
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	require.NoError(t, err)
	e, err := EnumFromBTF(spec, "skb_drop_reason", "SKB_DROP_REASON_")
	require.NoError(t, err)
	assert.Equal(t, "NO_SOCKET", e.Name(3))
	assert.Equal(t, "SKB_NOT_DROPPED_YET", e.Name(0))
	assert.Equal(t, "77", e.Name(77))
	v, ok := e.Value("NO_SOCKET")
	assert.True(t, ok)
	assert.Equal(t, uint64(3), v)
	_, err = EnumFromBTF(spec, "sk_rst_reason", "")
	assert.Error(t, err)
	_, err = EnumFromBTF(nil, "x", "")
	assert.Error(t, err)
}
