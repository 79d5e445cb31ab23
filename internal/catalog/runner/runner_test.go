package runner

import (
	"context"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/nannyagent/nannyagent/internal/catalog/registry"
	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func entry(t *testing.T, name string) catalog.Entry {
	e, ok := registry.Lookup(name)
	require.True(t, ok, name)
	return e
}

// Cancelling (Ctrl-C) ends every trace early with its result; a trace that
// fails to start reports its error; nothing any of them loaded stays in
// the kernel.
func TestRunCancelAndFailureLeaveNothingBehind(t *testing.T) {
	k := catalogtest.Kernel(t)
	before := catalogtest.OwnedBPF(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var during catalogtest.Owned
	var progressed bool
	start := time.Now()
	outs := Run(ctx, k, []Job{
		{Entry: entry(t, "exec"), Params: catalog.Params{Duration: time.Minute}},
		{Entry: entry(t, "syscalls"), Params: catalog.Params{Duration: time.Minute}},
		{Entry: entry(t, "tracepoint"), Params: catalog.Params{Target: "nosuch:tracepoint"}},
	}, func(p Progress) {
		// Cancel at the first progress report: everything is attached
		// then, however slow the machine (an emulated guest takes
		// seconds to start the traces).
		if !progressed {
			during = catalogtest.OwnedBPF(t)
			progressed = true
			cancel()
		}
		assert.Equal(t, time.Minute, p.Total)
	})
	assert.Less(t, time.Since(start), 50*time.Second, "cancel must end the minute-long traces early")
	require.Len(t, outs, 3)
	for _, o := range outs[:2] {
		require.NoError(t, o.Err, o.Entry)
		require.NotNil(t, o.Result, o.Entry)
		assert.Less(t, o.Result.Seconds(), 30.0, "%s ended early", o.Entry)
	}
	assert.Error(t, outs[2].Err)
	assert.Nil(t, outs[2].Result)
	require.True(t, progressed, "progress was reported")
	require.NotEmpty(t, during.Progs, "programs were loaded while tracing")
	catalogtest.RequireReleased(t, before, during)
}

func TestJobForResolutions(t *testing.T) {
	r := NewResolver()
	job, err := JobFor(r.Resolve(resolver.Request{Target: "execsnoop", Duration: resolver.Seconds(3)}))
	require.NoError(t, err)
	assert.Equal(t, "exec", job.Entry.Info().Name)
	assert.Equal(t, 3*time.Second, job.Params.Duration)

	job, err = JobFor(r.Resolve(resolver.Request{Type: "bpftrace", Target: "tracepoint:sched:sched_switch { @[comm] = count(); }"}))
	require.NoError(t, err)
	assert.Equal(t, "bpftrace", job.Entry.Info().Name)
	assert.Contains(t, job.Params.Target, "sched_switch")

	_, err = JobFor(r.Resolve(resolver.Request{Target: "rm -rf /"}))
	assert.Error(t, err)
}
