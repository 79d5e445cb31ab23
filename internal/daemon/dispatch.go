package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	brainapi "github.com/nannyagent/nannyagent/internal/brain/nannyapi"
	"github.com/nannyagent/nannyagent/internal/diagnose"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/nannyagent/nannyagent/internal/realtime"
	"github.com/nannyagent/nannyagent/internal/redact"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"go.uber.org/zap"
)

// maxRemembered bounds the investigation IDs remembered as run: far more
// than a host is given in the daemon's lifetime, and a bound all the same.
const maxRemembered = 100000

// runKey names an investigation in the set of those taken, whatever
// delivery (event or catch-up, create or update) brought it.
func runKey(id string) realtime.Key {
	return realtime.NewKey(nannyapi.CollectionInvestigations, id, "run", "")
}

// catchUps are the records a reconnected agent may have missed (§2.11).
var catchUps = []struct{ collection, filter string }{
	{nannyapi.CollectionInvestigations, "status='pending'"},
	{nannyapi.CollectionPatchOperations, "status='pending'"},
	{nannyapi.CollectionRebootOperations, "status='sent'"},
}

// onEvent runs on the realtime client's reading goroutine: it decides
// and queues, never waits.
func (d *Daemon) onEvent(_ context.Context, ev realtime.Event) {
	switch ev.Collection {
	case nannyapi.CollectionInvestigations:
		d.onInvestigation(ev)
	case nannyapi.CollectionPatchOperations, nannyapi.CollectionRebootOperations:
		d.onOperation(ev)
	default:
		d.log.Debug("event of a collection the agent does not act on", zap.String("collection", ev.Collection), zap.String("id", ev.ID))
	}
}

// catchup offers the pending records through the same de-duplication as
// the stream, as create events (the event that made them pending).
func (d *Daemon) catchup(ctx context.Context) error {
	offered := 0
	for _, c := range catchUps {
		items, err := d.o.Client.ListAll(ctx, c.collection, c.filter, "")
		if err != nil {
			return fmt.Errorf("catch-up of %s: %w", c.collection, err)
		}
		for _, raw := range items {
			k, err := realtime.KeyFor(c.collection, "create", raw)
			if err != nil {
				d.log.Warn("catch-up skipped a record without an id", zap.String("collection", c.collection), zap.Error(err))
				continue
			}
			if !d.dedup.Add(k) {
				continue
			}
			var head struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(raw, &head)
			offered++
			d.onEvent(ctx, realtime.Event{Collection: c.collection, Action: "create", ID: head.ID, Record: raw, Key: k})
		}
	}
	d.count(func(s *Stats) { s.Catchups++; s.CatchupRecords += uint64(offered) })
	d.log.Debug("catch-up done", zap.Int("offered", offered))
	return nil
}

func (d *Daemon) onInvestigation(ev realtime.Event) {
	if ev.Action == "delete" {
		d.cancelInvestigation(ev.ID)
		return
	}
	var rec nannyapi.InvestigationRecord
	if err := nannyapi.DecodeRecord(ev.Record, nannyapi.CollectionInvestigations, &rec); err != nil {
		d.log.Warn("unreadable investigation record", zap.String("id", ev.ID), zap.Error(err))
		return
	}
	// Only pending work is the agent's to start: updates that move an
	// investigation along (in_progress, completed) are its own echoes.
	if rec.Status != nannyapi.StatusPending {
		return
	}
	log := d.log.With(zap.String("investigation", rec.ID))
	switch {
	case rec.AgentID != "" && rec.AgentID != d.o.AgentID:
		d.count(func(s *Stats) { s.SkippedOther++ })
		log.Warn("investigation for another agent ignored", zap.String("agent_id", rec.AgentID))
		return
	case rec.InitiatedBy() == "agent":
		// CLI investigations of this agent come back as create events
		// too; the CLI runs them itself.
		d.count(func(s *Stats) { s.SkippedOwn++ })
		log.Debug("own investigation skipped")
		return
	}
	taken := runKey(rec.ID)
	if !d.started.Add(taken) {
		d.count(func(s *Stats) { s.SkippedSeen++ })
		log.Debug("investigation already taken")
		return
	}
	select {
	case d.jobs <- job{rec: rec, key: ev.Key}:
		d.count(func(s *Stats) { s.Queued++ })
		log.Info("investigation queued", zap.String("priority", rec.Priority))
	default:
		// It stays pending on the backend; forgetting it lets the next
		// catch-up offer it again.
		d.started.Forget(taken)
		d.dedup.Forget(ev.Key)
		d.count(func(s *Stats) { s.Dropped++ })
		log.Warn("investigation queue full; left pending for a later catch-up", zap.Int("queued", len(d.jobs)))
	}
}

func (d *Daemon) onOperation(ev realtime.Event) {
	if ev.Action != "create" {
		return
	}
	select {
	case d.ops <- ev:
	default:
		d.dedup.Forget(ev.Key)
		d.log.Warn("operation queue full; left for a later catch-up", zap.String("collection", ev.Collection), zap.String("id", ev.ID))
	}
}

// operations hands patch and reboot operations to their handlers, one
// at a time.
func (d *Daemon) operations(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-d.ops:
			d.operation(ctx, ev)
		}
	}
}

func (d *Daemon) operation(ctx context.Context, ev realtime.Event) {
	var err error
	switch ev.Collection {
	case nannyapi.CollectionPatchOperations:
		var op nannyapi.PatchOperationRecord
		if err = nannyapi.DecodeRecord(ev.Record, ev.Collection, &op); err == nil {
			if op.Status != "" && op.Status != "pending" {
				return
			}
			d.count(func(s *Stats) { s.Patches++ })
			err = d.o.Patches.HandlePatch(ctx, op)
		}
	case nannyapi.CollectionRebootOperations:
		var op nannyapi.RebootOperationRecord
		if err = nannyapi.DecodeRecord(ev.Record, ev.Collection, &op); err == nil {
			if op.Status != "sent" {
				return
			}
			d.count(func(s *Stats) { s.Reboots++ })
			err = d.o.Reboots.HandleReboot(ctx, op)
		}
	}
	if err != nil && ctx.Err() == nil {
		d.log.Error("operation failed", zap.String("collection", ev.Collection), zap.String("id", ev.ID), zap.Error(err))
	}
}

// worker runs queued investigations one after another.
func (d *Daemon) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-d.jobs:
			if ctx.Err() != nil {
				return
			}
			d.investigate(ctx, j.rec)
		}
	}
}

func (d *Daemon) cancelInvestigation(id string) {
	d.mu.Lock()
	cancel := d.running[id]
	d.mu.Unlock()
	if cancel != nil {
		d.log.Info("investigation deleted on the backend; cancelling it", zap.String("investigation", id))
		cancel()
	}
}

var errDeleted = errors.New("the investigation was deleted")

// investigate runs one portal investigation with the NannyAPI engine
// and records its outcome.
func (d *Daemon) investigate(ctx context.Context, rec nannyapi.InvestigationRecord) {
	log := d.log.With(zap.String("investigation", rec.ID))
	d.count(func(s *Stats) { s.Started++ })
	ictx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d.mu.Lock()
	d.running[rec.ID] = func() { cancel(errDeleted) }
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.running, rec.ID)
		d.mu.Unlock()
	}()

	eng, err := brainapi.New(brainapi.Config{
		Client: d.o.Client, AgentID: d.o.AgentID, InvestigationID: rec.ID,
		Retry: d.o.EngineRetry, Log: log.Named("engine"),
	})
	if err != nil {
		log.Error("cannot build the NannyAPI engine", zap.Error(err))
		return
	}
	issue := strings.TrimSpace(rec.UserPrompt)
	var rep *diagnose.Report
	var runErr error
	start := time.Now()
	if issue == "" {
		runErr = errors.New("the investigation has no issue text")
	} else {
		log.Info("investigation started", zap.String("issue", issue))
		rep, runErr = diagnose.Run(ictx, issue, d.diagnoseOptions(ictx, eng, log))
	}
	switch {
	case errors.Is(context.Cause(ictx), errDeleted):
		log.Info("investigation cancelled: deleted on the backend")
		return
	case ctx.Err() != nil:
		runErr = errors.New(ShuttingDown)
	}
	u := brainapi.Outcome(rep, runErr)
	fctx, fcancel := context.WithTimeout(d.finish, d.o.FinishMax)
	defer fcancel()
	if err := eng.Update(fctx, u); err != nil {
		d.count(func(s *Stats) { s.RecordErrors++ })
		log.Error("cannot record the investigation's outcome", zap.String("status", u.Status), zap.Error(err))
		return
	}
	if u.Status == nannyapi.StatusCompleted {
		d.count(func(s *Stats) { s.Completed++ })
	} else {
		d.count(func(s *Stats) { s.Failed++ })
	}
	fields := []zap.Field{zap.String("status", u.Status), zap.Duration("took", time.Since(start).Round(time.Millisecond))}
	if runErr != nil {
		fields = append(fields, zap.NamedError("reason", runErr))
	}
	log.Info("investigation finished", fields...)
}

func (d *Daemon) diagnoseOptions(ctx context.Context, eng *brainapi.Engine, log *zap.Logger) diagnose.Options {
	dc := d.cfg.Diagnose
	exec := d.o.Exec
	if exec == nil {
		e := safeexec.DefaultOptions()
		e.Timeout = time.Duration(dc.CommandTimeoutSec) * time.Second
		exec = &e
	}
	var facts *sysinfo.Facts
	if d.o.Facts != nil {
		facts = d.o.Facts(ctx)
	} else {
		facts = sysinfo.Collect(ctx, sysinfo.Options{Redact: redact.String})
	}
	return diagnose.Options{
		Engine: eng, Kernel: d.o.Kernel, TraceUnavailable: d.o.TraceUnavailable, Facts: facts,
		MaxRounds: dc.MaxRounds, MaxWall: time.Duration(dc.MaxWallSec) * time.Second,
		RoundBudget: time.Duration(dc.RoundBudgetSec) * time.Second, ContextBytes: dc.ContextBytes,
		Exec: exec, Redact: redact.String, Log: log.Named("diagnose"),
	}
}
