// Package runner runs several catalog traces at once: it starts them
// concurrently, reports progress, ends each at its duration or when the
// context is cancelled (Ctrl-C), and stops them concurrently, so a result
// is returned for every trace whatever happened.
package runner

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"go.uber.org/zap"
)

// Job is one trace to run.
type Job struct {
	Entry  catalog.Entry
	Params catalog.Params
}

// Outcome is what one job produced: a result, an error, or both (a trace
// that ran and then failed to detach cleanly still has its result).
type Outcome struct {
	Entry  string
	Result *catalog.Result
	Err    error
}

// Progress is reported while traces run.
type Progress struct {
	Elapsed time.Duration
	Total   time.Duration // the longest duration of the jobs
	Events  uint64        // events gathered so far, all traces
	Running int
}

// processStart approximates when the process started, for the
// start-to-attached figure.
var processStart = time.Now()

// ProgressInterval is how often Run reports progress.
const ProgressInterval = 250 * time.Millisecond

// Run runs jobs and returns their outcomes in job order. progress may be
// nil. Cancelling ctx ends every trace early; what was gathered is kept.
func Run(ctx context.Context, k *catalog.Kernel, jobs []Job, progress func(Progress)) []Outcome {
	out := make([]Outcome, len(jobs))
	traces := make([]catalog.Trace, len(jobs))
	var total time.Duration
	var wg sync.WaitGroup
	for i, j := range jobs {
		out[i].Entry = j.Entry.Info().Name
		d := catalog.ClampDuration(j.Params.Duration)
		jobs[i].Params.Duration = d
		if d > total {
			total = d
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, err := j.Entry.Start(ctx, k, jobs[i].Params)
			if err != nil {
				out[i].Err = err
				return
			}
			traces[i] = tr
		}()
	}
	wg.Wait()
	start := time.Now()
	attached := 0
	for _, tr := range traces {
		if tr != nil {
			attached++
		}
	}
	// The benchmarks read this line to time start-to-attached.
	k.Log.Info("traces attached", zap.Int("attached", attached), zap.Int("requested", len(jobs)),
		zap.Duration("since_process_start", time.Since(processStart)))

	stopping := make([]atomic.Bool, len(jobs))
	var stopWG sync.WaitGroup
	for i, tr := range traces {
		if tr == nil {
			continue
		}
		stopWG.Add(1)
		go func() {
			defer stopWG.Done()
			timer := time.NewTimer(jobs[i].Params.Duration)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
			stopping[i].Store(true)
			out[i].Result, out[i].Err = tr.Stop()
		}()
	}
	done := make(chan struct{})
	go func() { stopWG.Wait(); close(done) }()
	if progress != nil {
		tick := time.NewTicker(ProgressInterval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return out
			case <-tick.C:
				p := Progress{Elapsed: time.Since(start), Total: total}
				for i, tr := range traces {
					if tr != nil && !stopping[i].Load() {
						p.Running++
						p.Events += tr.Seen()
					}
				}
				progress(p)
			}
		}
	}
	<-done
	return out
}
