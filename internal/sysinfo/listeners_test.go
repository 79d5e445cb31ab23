package sysinfo

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseProcNetTCP(t *testing.T) {
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000080:00000003 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00001000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
   3: garbage
`
	got := parseProcNetTCP([]byte(tcp))
	require.Equal(t, []procNetListener{
		{Listener: Listener{Address: "127.0.0.1:8080", Port: 8080, Queued: 3}, inode: 4242},
		{Listener: Listener{Address: "0.0.0.0:22", Port: 22, Queued: 0}, inode: 77},
	}, got)
	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000200:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 00000010:00000000 00:00000000 00000000     0        0 98 1 0000000000000000 100 0 0 10 0
`
	got = parseProcNetTCP([]byte(tcp6))
	require.Equal(t, "[::]:443", got[0].Address)
	require.Equal(t, "[::1]:53", got[1].Address)
}

func FuzzParseProcNetTCP(f *testing.F) {
	f.Add("sl\n 0: 0100007F:1F90 00000000:0000 0A 00000080:00000003 00:00000000 00000000 0 0 4242 1\n")
	f.Fuzz(func(t *testing.T, s string) {
		for _, l := range parseProcNetTCP([]byte(s)) {
			if l.Port < 0 || l.Port > 65535 {
				t.Fatalf("port %d", l.Port)
			}
		}
	})
}

// TestListenersLive listens on a port and finds this process as its owner.
func TestListenersLive(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := Collect(ctx, Options{Interval: 10 * time.Millisecond})
	comm, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	for _, li := range f.Network.Listeners {
		if li.Port == port {
			require.Equal(t, "127.0.0.1:"+strconv.Itoa(port), li.Address)
			require.Equal(t, os.Getpid(), li.PID)
			require.Equal(t, string(comm[:len(comm)-1]), li.Comm)
			return
		}
	}
	t.Fatalf("port %d not among %+v", port, f.Network.Listeners)
}
