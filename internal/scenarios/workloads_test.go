package scenarios

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// runWorkload plays one workload in a child process; it returns the exit
// status (most run until killed).
func runWorkload(w string, args []string) int {
	arg := func(i int) string {
		if i < len(args) {
			return args[i]
		}
		return ""
	}
	if os.Getenv("NANNYAGENT_SCENARIO_WAIT_STDIN") == "1" {
		// Wait until the test has placed this process (in a cgroup).
		_, _ = os.Stdin.Read(make([]byte, 1))
	}
	var err error
	switch w {
	case "busy":
		err = busy(arg(0))
	case "alloc":
		err = alloc(arg(0))
	case "syncwrite":
		err = syncWrite(arg(0), arg(1))
	case "directread":
		err = directRead(arg(0))
	case "serve":
		err = serve(arg(0), arg(1))
	case "hold":
		err = hold(arg(0))
	case "crash":
		fmt.Fprintf(os.Stderr, "crashy: cannot read /etc/crashy/crashy.conf: no such file or directory\n")
		return 1
	case "bind":
		l, lerr := net.Listen("tcp", arg(0))
		if lerr != nil {
			fmt.Fprintf(os.Stderr, "webapp: %v\n", lerr)
			return 1
		}
		l.Close()
		return 0
	default:
		err = fmt.Errorf("unknown workload %q", w)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, w+":", err)
		return 1
	}
	return 0
}

// busy spins n threads forever.
func busy(n string) error {
	threads, err := strconv.Atoi(n)
	if err != nil {
		return err
	}
	runtime.GOMAXPROCS(threads)
	for range threads {
		go func() {
			runtime.LockOSThread()
			x := 0
			for {
				x++
			}
		}()
	}
	select {}
}

// alloc allocates and touches mb MiB, one MiB at a time, then holds it.
func alloc(mb string) error {
	n, err := strconv.Atoi(mb)
	if err != nil {
		return err
	}
	var keep [][]byte
	for range n {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
	}
	select {}
}

// syncWrite writes 1 MiB blocks with O_DSYNC from threads threads, each
// to its own file path.N wrapping at 32 MiB, forever: every write waits
// for the device, as a database's log writer or an ingest pipeline that
// must not lose data does.
func syncWrite(path, threads string) error {
	n, err := strconv.Atoi(threads)
	if err != nil || n < 1 {
		return fmt.Errorf("threads: %q", threads)
	}
	errc := make(chan error, n)
	for i := range n {
		f, err := os.OpenFile(path+"."+strconv.Itoa(i), os.O_CREATE|os.O_WRONLY|unix.O_DSYNC, 0o600)
		if err != nil {
			return err
		}
		go func() {
			buf := make([]byte, 1<<20)
			for j := range buf {
				buf[j] = byte(j + i)
			}
			var off int64
			for {
				if _, err := f.WriteAt(buf, off); err != nil {
					errc <- err
					return
				}
				off = (off + int64(len(buf))) % (32 << 20)
			}
		}()
	}
	return <-errc
}

// directRead reads random 4 KiB blocks of path with O_DIRECT forever,
// bypassing the page cache the way a database's buffer misses do.
func directRead(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	blocks := st.Size / 4096
	// O_DIRECT needs an aligned buffer.
	raw := make([]byte, 8192)
	off := 4096 - int(uintptr(unsafePointer(raw))%4096)
	buf := raw[off%4096 : off%4096+4096]
	for {
		if _, err := unix.Pread(fd, buf, rand.Int64N(blocks)*4096); err != nil {
			return err
		}
	}
}

// serve is a small web server that opens dir/index.html for every
// request, answering 403 when it may not, with a client that asks every
// 20 ms (a site with steady traffic).
func serve(addr, file string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() {
		for {
			if resp, err := http.Get("http://" + l.Addr().String() + "/"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(file)
		if errors.Is(err, os.ErrPermission) {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		io.Copy(w, f)
	}))
}

// hold listens on addr forever.
func hold(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		c.Close()
	}
}
