package cli

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/nannyagent/nannyagent/internal/brain/openaitest"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
)

// agent builds the real binary once: the interactive mode is tested the
// way people use it, on a terminal.
func agent(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nannyagent-cli-")
		if err != nil {
			agentErr = err
			return
		}
		agentBin = filepath.Join(dir, "nannyagent")
		out, err := exec.Command("go", "build", "-o", agentBin, "github.com/nannyagent/nannyagent/cmd/nannyagent").CombinedOutput()
		if err != nil {
			agentErr = errors.New("go build: " + err.Error() + ": " + string(out))
		}
	})
	require.NoError(t, agentErr)
	return agentBin
}

// terminal is the agent running on a pseudo-terminal, and everything it
// has written there.
type terminal struct {
	t    *testing.T
	cmd  *exec.Cmd
	pty  *os.File
	mu   sync.Mutex
	out  bytes.Buffer
	mark int // start of what expect has not consumed
	grew chan struct{}
	done chan struct{}
}

func startTerminal(t *testing.T, args ...string) *terminal {
	t.Helper()
	cmd := exec.Command(agent(t), args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NANNYAGENT_AI_PROVIDER=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "TERM=xterm")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 50, Cols: 200})
	require.NoError(t, err)
	tm := &terminal{t: t, cmd: cmd, pty: f, grew: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(tm.done)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				tm.mu.Lock()
				tm.out.Write(buf[:n])
				tm.mu.Unlock()
				select {
				case tm.grew <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return // EIO once the agent has exited
			}
		}
	}()
	t.Cleanup(func() {
		if tm.cmd.ProcessState == nil {
			_ = tm.cmd.Process.Kill()
			_ = tm.cmd.Wait()
		}
		f.Close()
		if t.Failed() {
			t.Logf("terminal:\n%s", tm.screen())
		}
	})
	return tm
}

func (tm *terminal) screen() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.String()
}

// expect waits until the output after the last match holds re, and
// consumes it. The timeout bounds a hang; it is not a pace.
func (tm *terminal) expect(re string) []string {
	tm.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(90 * time.Second)
	for {
		tm.mu.Lock()
		rest := tm.out.Bytes()[tm.mark:]
		if loc := rx.FindSubmatchIndex(rest); loc != nil {
			var groups []string
			for i := 0; i+1 < len(loc); i += 2 {
				groups = append(groups, string(rest[loc[i]:loc[i+1]]))
			}
			tm.mark += loc[1]
			tm.mu.Unlock()
			return groups
		}
		tm.mu.Unlock()
		select {
		case <-tm.grew:
		case <-tm.done:
			// Drain what arrived with the end.
			tm.mu.Lock()
			ok := rx.Match(tm.out.Bytes()[tm.mark:])
			tm.mu.Unlock()
			if !ok {
				tm.t.Fatalf("the agent ended before printing %q", re)
			}
		case <-deadline:
			tm.t.Fatalf("no %q on the terminal", re)
		}
	}
}

func (tm *terminal) send(s string) {
	tm.t.Helper()
	_, err := tm.pty.Write([]byte(s))
	require.NoError(tm.t, err)
}

func (tm *terminal) wait() int {
	tm.t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- tm.cmd.Wait() }()
	select {
	case err := <-errc:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		require.NoError(tm.t, err)
		return 0
	case <-time.After(60 * time.Second):
		tm.t.Fatal("the agent did not exit")
		return -1
	}
}

// ownedBPF lists the BPF programs and links process pid holds.
func ownedBPF(t *testing.T, pid int) catalogtest.Owned {
	o := catalogtest.Owned{Progs: map[uint32]bool{}, Links: map[uint32]bool{}}
	dir := "/proc/" + strconv.Itoa(pid) + "/fdinfo"
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, ent := range ents {
		data, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			k, v, _ := strings.Cut(line, ":")
			id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				continue
			}
			switch k {
			case "prog_id":
				o.Progs[uint32(id)] = true
			case "link_id":
				o.Links[uint32(id)] = true
			}
		}
	}
	return o
}

const promptRE = `nannyagent> `

// The interactive mode on a pseudo-terminal: the banner, two
// investigations in one session, history, Ctrl-C at the prompt, Ctrl-C
// during a trace (as root), quit.
func TestInteractiveSession(t *testing.T) {
	srv := openaitest.New(t)
	cfg := writeConfig(t, "ai:\n  base_url: "+srv.BaseURL()+"\n  model: test-model\n")
	tm := startTerminal(t, "--config", cfg)

	tm.expect(`eBPF: \d+ of \d+ catalog entries work here`)
	tm.expect(`engine: openai \(model test-model at ` + regexp.QuoteMeta(srv.BaseURL()) + `; auto: ai.base_url is set\)`)
	tm.expect(promptRE)

	// One: a command round, then the answer.
	srv.Push(
		openaitest.Reply(`{"response_type":"diagnostic","reasoning":"which kernel is this","commands":["uname -s"]}`),
		openaitest.Reply(`{"response_type":"resolution","root_cause":"first: /var is out of inodes","resolution_plan":"1. remove the session files","confidence":"High"}`),
	)
	tm.send("cannot create files in /var\r")
	tm.expect(`round 1: which kernel is this`)
	tm.expect(`✓ uname -s \(\d+ms\)`)
	tm.expect(`Root cause \(confidence: High\)`)
	tm.expect(`first: /var is out of inodes`)
	tm.expect(promptRE)

	// Two: answered at once.
	srv.Push(openaitest.Reply(`{"response_type":"resolution","root_cause":"second: nginx cannot read its files","resolution_plan":"1. chmod","confidence":"Medium"}`))
	tm.send("nginx says permission denied\r")
	tm.expect(`second: nginx cannot read its files`)
	tm.expect(promptRE)
	require.Len(t, srv.Requests(), 3)
	assert.Contains(t, srv.Requests()[2].Messages[1].Content, "nginx says permission denied")

	// History: up arrow brings the last line back; Ctrl-C abandons it
	// without an investigation.
	tm.send("\x1b[A")
	tm.expect(`nginx says permission denied`)
	tm.send("\x03")
	tm.expect(`\^C\r\n` + promptRE)
	tm.send("   \r")
	tm.expect(promptRE)
	assert.Len(t, srv.Requests(), 3, "neither an abandoned nor a blank line is an investigation")

	if os.Geteuid() == 0 {
		// Ctrl-C during a trace cancels the investigation, not the
		// program, and leaves nothing of it in the kernel.
		srv.Push(openaitest.Reply(`{"response_type":"diagnostic","reasoning":"watch what starts","ebpf_programs":[{"name":"exec","type":"tracepoint","target":"exec","duration":60}]}`))
		tm.send("something keeps spawning processes\r")
		tm.expect(`tracing exec… \d+s left`)
		pid := tm.cmd.Process.Pid
		var during catalogtest.Owned
		require.Eventually(t, func() bool {
			during = ownedBPF(t, pid)
			return len(during.Progs) > 0
		}, 30*time.Second, 20*time.Millisecond, "the trace's programs are loaded")
		tm.send("\x03")
		tm.expect(`investigation cancelled`)
		tm.expect(promptRE)
		after := ownedBPF(t, pid)
		assert.Empty(t, after.Progs, "programs still held after the cancel")
		assert.Empty(t, after.Links, "links still held after the cancel")
		catalogtest.RequireReleased(t, catalogtest.Owned{Progs: map[uint32]bool{}, Links: map[uint32]bool{}}, during)
		assert.Len(t, srv.Requests(), 4, "a cancelled investigation asks the engine nothing more")

		// The session goes on after the cancel.
		srv.Push(openaitest.Reply(`{"response_type":"resolution","root_cause":"third: cron spawns a job every second","resolution_plan":"1. fix the crontab","confidence":"High"}`))
		tm.send("something keeps spawning processes\r")
		tm.expect(`third: cron spawns a job every second`)
		tm.expect(promptRE)
	} else if catalogtest.Required() {
		t.Fatalf("%s=1 but the test is not running as root", catalogtest.RequireEnv)
	} else {
		t.Log("not root: the Ctrl-C-during-a-trace part needs root")
	}

	tm.send("quit\r")
	require.Equal(t, 0, tm.wait())
	assert.Zero(t, srv.Left())
}

// Ctrl-D on an empty line ends the session like quit.
func TestInteractiveCtrlD(t *testing.T) {
	cfg := writeConfig(t, "")
	tm := startTerminal(t, "--config", cfg, "--engine", "offline")
	tm.expect(`engine: offline`)
	tm.expect(promptRE)
	tm.send("\x04")
	require.Equal(t, 0, tm.wait())
}
