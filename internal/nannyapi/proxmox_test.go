package nannyapi

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
)

func fieldsOf(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m), string(b))
	return m
}

// The four calls send exactly the §2.8 fields (omitempty ones left out
// when empty), with the agent's bearer, and return the record IDs.
func TestIngestProxmox(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	u := srv.CreateUser("owner@example.com")
	reg := srv.RegisterAgent(u, "pve1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	ctx := testCtx(t)

	nodeID, err := c.IngestProxmoxNode(ctx, ProxmoxNode{
		AgentID: reg.AgentID, IP: "10.0.0.5", Local: 1, Name: "pve1", NodeID: 1, Online: 1, PVEVersion: "pve-manager/8.2.2/9355359cd7afbae4",
	})
	require.NoError(t, err)
	clusterID, err := c.IngestProxmoxCluster(ctx, ProxmoxCluster{Name: "lab", Nodes: 3, Quorate: 1, Version: 7, ClusterID: "cluster"})
	require.NoError(t, err)
	lxcID, err := c.IngestProxmoxLXC(ctx, ProxmoxLXC{
		AgentID: reg.AgentID, Name: "ct100", LXCID: "lxc/100", Status: "running", OSType: "ubuntu", Uptime: 1234, VMID: 100, Node: "pve1",
	})
	require.NoError(t, err)
	vmID, err := c.IngestProxmoxQEMU(ctx, ProxmoxQEMU{
		AgentID: reg.AgentID, Name: "vm200", QEMUID: "qemu/200", Status: "running", OSType: "l26", Uptime: 99, VMID: 200,
		VMGenID: "abc", KVM: 1, Boot: "order=scsi0", CPU: "host", Node: "pve1",
	})
	require.NoError(t, err)
	bare, err := c.IngestProxmoxQEMU(ctx, ProxmoxQEMU{Name: "vm201", QEMUID: "qemu/201", Status: "stopped", OSType: "other", VMID: 201, Node: "pve1"})
	require.NoError(t, err)

	ins := srv.ProxmoxIngests()
	require.Len(t, ins, 5)
	for i, want := range []struct {
		kind, id string
		body     map[string]any
	}{
		{"node", nodeID, map[string]any{"agent_id": reg.AgentID, "ip": "10.0.0.5", "level": "", "local": 1.0, "name": "pve1", "nodeid": 1.0, "online": 1.0, "pveversion": "pve-manager/8.2.2/9355359cd7afbae4"}},
		{"cluster", clusterID, map[string]any{"name": "lab", "nodes": 3.0, "quorate": 1.0, "version": 7.0, "px_cluster_id": "cluster"}},
		{"lxc", lxcID, map[string]any{"agent_id": reg.AgentID, "node_id": "", "name": "ct100", "lxc_id": "lxc/100", "status": "running", "ostype": "ubuntu", "uptime": 1234.0, "vmid": 100.0, "node": "pve1"}},
		{"qemu", vmID, map[string]any{"agent_id": reg.AgentID, "node_id": "", "name": "vm200", "qemu_id": "qemu/200", "status": "running", "ostype": "l26", "uptime": 99.0, "vmid": 200.0, "vmgenid": "abc", "kvm": 1.0, "boot": "order=scsi0", "cpu": "host", "node": "pve1"}},
		{"qemu", bare, map[string]any{"agent_id": "", "node_id": "", "name": "vm201", "qemu_id": "qemu/201", "status": "stopped", "ostype": "other", "uptime": 0.0, "vmid": 201.0, "node": "pve1"}},
	} {
		require.Equal(t, want.kind, ins[i].Kind)
		require.Equal(t, http.StatusOK, ins[i].Status)
		require.Equal(t, want.id, ins[i].RecordID)
		require.Equal(t, reg.AgentID, ins[i].AgentID)
		require.Equal(t, want.body, fieldsOf(t, ins[i].Body), "ingest %d", i)
	}
	for _, r := range srv.RequestsFor("POST /api/proxmox/qemu") {
		require.Equal(t, "Bearer "+reg.AccessToken, r.Header.Get("Authorization"))
		require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	}
}

func TestIngestProxmoxErrors(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	u := srv.CreateUser("owner@example.com")
	reg := srv.RegisterAgent(u, "pve1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	ctx := testCtx(t)

	_, err := c.IngestProxmoxLXC(ctx, ProxmoxLXC{VMID: 100, Node: "pve1"})
	require.True(t, IsProxmoxNodeNotFound(err), "%v", err)
	e, ok := AsError(err)
	require.True(t, ok)
	require.Equal(t, "POST /api/proxmox/lxc", e.Op)
	require.Equal(t, "Node not found: pve1", e.Message)
	_, err = c.IngestProxmoxQEMU(ctx, ProxmoxQEMU{VMID: 200, Node: "pve1"})
	require.True(t, IsProxmoxNodeNotFound(err), "%v", err)

	// Other refusals are not the node rule.
	user := newClient(t, srv, StaticToken(u.Token))
	_, err = user.IngestProxmoxNode(ctx, ProxmoxNode{Name: "pve1"})
	require.True(t, IsUnauthorized(err), "%v", err)
	require.False(t, IsProxmoxNodeNotFound(err))
	srv.Inject("POST /api/proxmox/cluster", nannyapitest.Fault{Status: http.StatusBadRequest, Times: 1})
	_, err = c.IngestProxmoxCluster(ctx, ProxmoxCluster{Name: "lab"})
	require.Error(t, err)
	require.False(t, IsProxmoxNodeNotFound(err))
	srv.Inject("POST /api/proxmox/qemu", nannyapitest.Fault{Status: http.StatusInternalServerError, Times: 1})
	_, err = c.IngestProxmoxQEMU(ctx, ProxmoxQEMU{VMID: 200, Node: "pve1"})
	require.True(t, Retryable(err), "%v", err)
	require.False(t, IsProxmoxNodeNotFound(err))
}
