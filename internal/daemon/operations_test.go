package daemon

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
)

// ops records the operations handed to the hooks.
type ops struct {
	mu      sync.Mutex
	patches []nannyapi.PatchOperationRecord
	reboots []nannyapi.RebootOperationRecord
}

func (o *ops) HandlePatch(_ context.Context, op nannyapi.PatchOperationRecord) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.patches = append(o.patches, op)
	return nil
}

func (o *ops) HandleReboot(_ context.Context, op nannyapi.RebootOperationRecord) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reboots = append(o.reboots, op)
	return errors.New("the hook's error is logged, nothing more")
}

func (o *ops) counts() (int, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.patches), len(o.reboots)
}

// TestOperationsDispatched: patch and reboot operations, pending before
// the daemon starts (the first catch-up) or created while it runs (their
// events), reach their hooks once each, decoded; updates do not.
func TestOperationsDispatched(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{})
	h := &ops{}
	e.opts.Patches, e.opts.Reboots = h, h
	early, err := e.srv.CreatePatchOperation(e.reg.AgentID, nannyapitest.PatchOperation{Exclusions: []string{"nginx"}})
	require.NoError(t, err)
	e.start()
	e.waitUntil("the pending patch", func() bool { p, _ := h.counts(); return p == 1 })
	live, err := e.srv.CreatePatchOperation(e.reg.AgentID, nannyapitest.PatchOperation{Mode: "apply", LXCID: "rhgs96k78q43f30", VMID: "100"})
	require.NoError(t, err)
	reboot, err := e.srv.CreateRebootOperation(e.reg.AgentID, "kernel update", 120)
	require.NoError(t, err)
	e.waitUntil("the live operations", func() bool { p, r := h.counts(); return p == 2 && r == 1 })
	require.NoError(t, e.srv.UpdateRecord(nannyapitest.PatchOperations, live, map[string]any{"status": "running"}))
	require.NoError(t, e.srv.UpdateRecord(nannyapitest.RebootOperations, reboot, map[string]any{"status": "rebooting"}))
	e.waitUntil("the first catch-up", func() bool { return e.d.Stats().Catchups == 1 })
	e.srv.DropStreams()
	e.rtSleep.release <- struct{}{}
	e.waitUntil("the catch-up after the drop", func() bool { return e.d.Stats().Catchups == 2 })
	err, _ = e.stop()
	require.NoError(t, err)

	require.Len(t, h.patches, 2)
	require.Equal(t, early, h.patches[0].ID)
	require.Equal(t, []string{"nginx"}, h.patches[0].Exclusions)
	require.Equal(t, "dry-run", h.patches[0].Mode)
	require.Equal(t, nannyapitest.DefaultScriptID, h.patches[0].ScriptID)
	require.Equal(t, live, h.patches[1].ID)
	require.Equal(t, "apply", h.patches[1].Mode)
	require.Equal(t, "100", h.patches[1].VMID)
	require.Len(t, h.reboots, 1)
	require.Equal(t, reboot, h.reboots[0].ID)
	require.Equal(t, 120, h.reboots[0].TimeoutSeconds)
	require.Equal(t, "kernel update", h.reboots[0].Reason)
	st := e.d.Stats()
	require.Equal(t, uint64(2), st.Patches)
	require.Equal(t, uint64(1), st.Reboots)
}

// fakeTokens fails as often as told, then hands out a token.
type fakeTokens struct {
	mu    sync.Mutex
	fails int
	calls int
}

func (f *fakeTokens) Token(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.fails {
		return "", errors.New("refresh token expired: register again")
	}
	return "t", nil
}

func TestAuthLoop(t *testing.T) {
	noLeaks(t)
	cfg := config.Defaults()
	cfg.TokenRenewalCheckIntervalSecs, cfg.TokenRenewalRetryIntervalSecs = 3600, 3600
	tok := &fakeTokens{fails: 1}
	reported := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- AuthLoop(tok, cfg, nil, func(err error) { reported <- err }).Run(ctx) }()
	require.ErrorContains(t, <-reported, "register again")
	cancel()
	require.NoError(t, <-done, "a stop is not an error")
	require.Equal(t, 1, tok.calls, "the next try waits for the retry interval")
}
