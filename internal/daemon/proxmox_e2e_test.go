package daemon

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/nannyagent/nannyagent/internal/proxmox"
	"github.com/nannyagent/nannyagent/internal/proxmox/proxmoxtest"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// proxmoxReporter is the daemon's Proxmox component with the given
// pveversion and pvesh (the fakes of proxmoxtest): one cycle right after
// start and no second one during the test. Its log goes to the test's
// log and to the returned observer.
func proxmoxReporter(t *testing.T, e *env, pveversion, pvesh string) (*proxmox.Reporter, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel), zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, core)
	})))
	r, err := proxmox.New(proxmox.Options{
		Backend: e.cl, AgentID: e.reg.AgentID, Config: e.opts.Config,
		InitialDelay: time.Millisecond, Interval: time.Hour,
		PVEVersion: pveversion, Pvesh: pvesh, Logger: log.Named("proxmox"),
	})
	require.NoError(t, err)
	return r, logs
}

// The daemon on node pve2 of a three-node cluster reports, in order,
// the node, the cluster, its four containers and its four VMs, each
// with exactly the fields the pvesh outputs give; nothing of the other
// nodes' guests.
func TestProxmoxInventoryEndToEnd(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{})
	fake := proxmoxtest.New(t, proxmoxtest.Cluster3)
	r, logs := proxmoxReporter(t, e, fake.PVEVersion, fake.Pvesh)
	e.opts.Proxmox = r
	e.start()
	want := proxmoxtest.Want(proxmoxtest.Cluster3, e.reg.AgentID)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, e.srv.Wait(ctx, func() bool { return len(e.srv.ProxmoxIngests()) == len(want) }))
	e.waitUntil("the cycle's report", func() bool { return logs.FilterMessage("Proxmox VE inventory sent").Len() == 1 })
	err, _ := e.stop()
	require.NoError(t, err)
	require.Equal(t, 0, logs.FilterLevelExact(zap.WarnLevel).Len())

	var got []nannyapitest.Request
	for _, r := range e.srv.Requests() {
		if strings.HasPrefix(r.Path, "/api/proxmox/") {
			got = append(got, r)
		}
	}
	require.Len(t, got, len(want))
	for i, w := range want {
		r := got[i]
		require.Equal(t, http.MethodPost, r.Method)
		require.Equal(t, w.Path, r.Path, "request %d", i)
		require.Equal(t, http.StatusOK, r.Status, "request %d", i)
		require.Equal(t, "Bearer "+e.reg.AccessToken, r.Header.Get("Authorization"))
		require.Equal(t, "application/json", r.Header.Get("Content-Type"))
		require.Equal(t, proxmoxtest.Fields(t, []byte(w.Body)), proxmoxtest.Fields(t, r.Body), "request %d (%s)", i, w.Path)
	}

	nodes := e.srv.ProxmoxRecords(nannyapitest.ProxmoxNodes)
	require.Len(t, nodes, 1)
	require.Equal(t, "pve2", nodes[0]["name"])
	require.Equal(t, "pve-manager/8.3.0/c1689ccb1065a83b", nodes[0]["pve_version"])
	clusters := e.srv.ProxmoxRecords(nannyapitest.ProxmoxClusters)
	require.Len(t, clusters, 1)
	require.Equal(t, []string{e.reg.AgentID}, clusters[0]["agents"])
	require.Len(t, e.srv.ProxmoxRecords(nannyapitest.ProxmoxLXC), 4)
	require.Len(t, e.srv.ProxmoxRecords(nannyapitest.ProxmoxQEMU), 4)
	require.Equal(t, []string{
		"/cluster/status", "/nodes/pve2/status", "/cluster/resources",
		"/nodes/pve2/lxc/101/config", "/nodes/pve2/lxc/102/config", "/nodes/pve2/lxc/103/config", "/nodes/pve2/lxc/104/config",
		"/nodes/pve2/qemu/200/config", "/nodes/pve2/qemu/201/config", "/nodes/pve2/qemu/202/config", "/nodes/pve2/qemu/9000/config",
	}, fake.Calls(t))
}

// On a host without pveversion the component idles: the daemon runs
// and stops cleanly, and no Proxmox call is made.
func TestProxmoxInventoryOffOnOtherHosts(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{})
	fake := proxmoxtest.New(t, proxmoxtest.Cluster3)
	r, logs := proxmoxReporter(t, e, filepath.Join(t.TempDir(), "pveversion"), fake.Pvesh)
	e.opts.Proxmox = r
	e.start()
	e.waitUntil("the component to say it is off", func() bool {
		return logs.FilterMessage("the Proxmox VE inventory is off on this host").Len() == 1
	})
	err, _ := e.stop()
	require.NoError(t, err)
	for _, r := range e.srv.Requests() {
		require.False(t, strings.HasPrefix(r.Path, "/api/proxmox/"), r.Path)
	}
	require.Empty(t, fake.Calls(t))
	require.Equal(t, 1, logs.Len())
}
