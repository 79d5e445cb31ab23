package inet

import (
	"testing"

	"github.com/stretchr/testify/assert"
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

func TestConnOf(t *testing.T) {
	a, b := [16]byte{15: 1}, [16]byte{15: 2}
	assert.Equal(t, ConnOf(a, 80, b, 40000), ConnOf(b, 40000, a, 80))
	assert.Equal(t, ConnOf(a, 80, a, 40000), ConnOf(a, 40000, a, 80))
	assert.NotEqual(t, ConnOf(a, 80, a, 40000), ConnOf(a, 81, a, 40000))
}
