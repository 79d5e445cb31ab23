package nannyapitest

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// ingested posts an ingestion, checks its 200 answer and returns the
// record ID.
func ingested(t *testing.T, s *Server, kind, path, token, reqBody string) string {
	t.Helper()
	status, body := call(t, s, "POST", path, token, reqBody)
	require.Equal(t, http.StatusOK, status, body)
	m := decode(t, body)
	require.Len(t, m, 2, body)
	require.Equal(t, kind+" ingested successfully", m["message"])
	id, _ := m["id"].(string)
	require.Regexp(t, pbIDRe, id)
	exact(t, http.StatusOK, `{"id":"`+id+`","message":"`+kind+` ingested successfully"}`, status, body)
	return id
}

const (
	pxNode    = `{"ip":"10.0.0.5","level":"","local":1,"name":"pve1","nodeid":1,"online":1,"pveversion":"pve-manager/8.2.2/9355359cd7afbae4"}`
	pxCluster = `{"name":"lab","nodes":1,"quorate":1,"version":3,"px_cluster_id":"cluster"}`
	pxLXC     = `{"name":"ct100","lxc_id":"lxc/100","status":"running","ostype":"ubuntu","uptime":1234,"vmid":100,"node":"pve1"}`
	pxQEMU    = `{"name":"vm200","qemu_id":"qemu/200","status":"running","ostype":"l26","uptime":99,"vmid":200,"vmgenid":"abc","kvm":1,"boot":"order=scsi0","cpu":"host","node":"pve1"}`
)

// The exchanges of §6.8, then the records they leave.
func TestProxmoxIngestion(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u1@example.com")
	reg := s.RegisterAgent(u, "pve1")
	at := reg.AccessToken

	nodeID := ingested(t, s, "Node", "/api/proxmox/node", at, pxNode)
	clusterID := ingested(t, s, "Cluster", "/api/proxmox/cluster", at, pxCluster)
	lxcID := ingested(t, s, "LXC", "/api/proxmox/lxc", at, pxLXC)
	qemuID := ingested(t, s, "QEMU VM", "/api/proxmox/qemu", at, pxQEMU)

	st, body := call(t, s, "POST", "/api/proxmox/lxc", at, `{"name":"x","vmid":101,"node":"nope"}`)
	exact(t, http.StatusBadRequest, `{"error":"Node not found: nope"}`, st, body)
	st, body = call(t, s, "POST", "/api/proxmox/qemu", at, `{"name":"x","vmid":201,"node":"nope"}`)
	exact(t, http.StatusBadRequest, `{"error":"Node not found: nope"}`, st, body)
	for _, kind := range []string{"node", "cluster", "lxc", "qemu"} {
		st, body = call(t, s, "POST", "/api/proxmox/"+kind, u.Token, pxNode)
		exact(t, http.StatusUnauthorized, `{"error":"unauthorized"}`, st, body)
		st, body = call(t, s, "POST", "/api/proxmox/"+kind, "", pxNode)
		exact(t, http.StatusUnauthorized, `{"error":"unauthorized"}`, st, body)
		st, body = call(t, s, "POST", "/api/proxmox/"+kind, at, `{"name":`)
		exact(t, http.StatusBadRequest, `{"error":"Invalid request body"}`, st, body)
	}
	// The backend binds Go ints: a quoted or fractional number does not
	// parse.
	st, body = call(t, s, "POST", "/api/proxmox/lxc", at, `{"name":"ct100","vmid":"100","node":"pve1"}`)
	exact(t, http.StatusBadRequest, `{"error":"Invalid request body"}`, st, body)
	st, body = call(t, s, "POST", "/api/proxmox/node", at, `{"name":"pve1","nodeid":1.5}`)
	exact(t, http.StatusBadRequest, `{"error":"Invalid request body"}`, st, body)

	nodes := s.ProxmoxRecords(ProxmoxNodes)
	require.Len(t, nodes, 1)
	n := nodes[0]
	require.NotEmpty(t, n["recorded_at"])
	delete(n, "recorded_at")
	// The node came before the cluster: the cluster's ingestion
	// backfilled its cluster_id.
	require.Equal(t, map[string]any{
		"id": nodeID, "collectionId": ProxmoxNodesCollectionID, "collectionName": ProxmoxNodes,
		"agent_id": reg.AgentID, "user_id": u.ID, "cluster_id": clusterID, "ip": "10.0.0.5", "level": "",
		"local": 1, "name": "pve1", "pve_version": "pve-manager/8.2.2/9355359cd7afbae4", "px_node_id": 1, "online": 1,
	}, n)
	clusters := s.ProxmoxRecords(ProxmoxClusters)
	require.Len(t, clusters, 1)
	c := clusters[0]
	delete(c, "recorded_at")
	require.Equal(t, map[string]any{
		"id": clusterID, "collectionId": ProxmoxClustersCollectionID, "collectionName": ProxmoxClusters,
		"cluster_name": "lab", "nodes": 1, "quorate": 1, "version": 3, "px_cluster_id": "cluster",
		"agents": []string{reg.AgentID}, "user_id": u.ID,
	}, c)
	lxcs := s.ProxmoxRecords(ProxmoxLXC)
	require.Len(t, lxcs, 1)
	delete(lxcs[0], "recorded_at")
	require.Equal(t, map[string]any{
		"id": lxcID, "collectionId": ProxmoxLXCCollectionID, "collectionName": ProxmoxLXC,
		"agent_id": reg.AgentID, "user_id": u.ID, "cluster_id": clusterID, "node_id": nodeID, "name": "ct100",
		"lxc_id": "lxc/100", "status": "running", "ostype": "ubuntu", "uptime": 1234, "vmid": 100,
	}, lxcs[0])
	vms := s.ProxmoxRecords(ProxmoxQEMU)
	require.Len(t, vms, 1)
	delete(vms[0], "recorded_at")
	require.Equal(t, map[string]any{
		"id": qemuID, "collectionId": ProxmoxQEMUCollectionID, "collectionName": ProxmoxQEMU,
		"agent_id": reg.AgentID, "user_id": u.ID, "cluster_id": clusterID, "node_id": nodeID, "name": "vm200",
		"qemu_id": "qemu/200", "status": "running", "ostype": "l26", "uptime": 99, "vmid": 200,
		"vmgenid": "abc", "kvm": 1, "boot": "order=scsi0", "host_cpu": "host",
	}, vms[0])

	// Every request that reached the handler, with its raw body.
	ins := s.ProxmoxIngests()
	require.Len(t, ins, 4+2+12+2)
	require.Equal(t, ProxmoxIngest{
		Kind: "node", AgentID: reg.AgentID, Body: []byte(pxNode), Status: http.StatusOK,
		Answer: `{"id":"` + nodeID + `","message":"Node ingested successfully"}` + "\n", RecordID: nodeID,
	}, ins[0])
	require.Equal(t, ProxmoxIngest{
		Kind: "lxc", AgentID: reg.AgentID, Body: []byte(`{"name":"x","vmid":101,"node":"nope"}`),
		Status: http.StatusBadRequest, Answer: `{"error":"Node not found: nope"}` + "\n",
	}, ins[4])
	require.Equal(t, ProxmoxIngest{
		Kind: "node", Body: []byte(pxNode), Status: http.StatusUnauthorized, Answer: `{"error":"unauthorized"}` + "\n",
	}, ins[6])
}

// Upserts use the documented keys: a node by (name, agent), a cluster
// by (cluster_name, user), a guest by (vmid, node).
func TestProxmoxUpserts(t *testing.T) {
	s := New(t, Options{})
	u1, u2 := s.CreateUser("u1@example.com"), s.CreateUser("u2@example.com")
	a1, a2, a3 := s.RegisterAgent(u1, "pve1"), s.RegisterAgent(u1, "pve2"), s.RegisterAgent(u2, "other")

	n1 := ingested(t, s, "Node", "/api/proxmox/node", a1.AccessToken, pxNode)
	again := ingested(t, s, "Node", "/api/proxmox/node", a1.AccessToken,
		`{"ip":"10.0.0.6","name":"pve1","nodeid":1,"online":0,"pveversion":"pve-manager/8.3.0/c1689ccb1065a83b"}`)
	require.Equal(t, n1, again)
	// The same name from another agent is another node.
	n2 := ingested(t, s, "Node", "/api/proxmox/node", a2.AccessToken, pxNode)
	require.NotEqual(t, n1, n2)
	nodes := s.ProxmoxRecords(ProxmoxNodes)
	require.Len(t, nodes, 2)
	require.Equal(t, "10.0.0.6", nodes[0]["ip"])
	require.Equal(t, 0, nodes[0]["online"])
	require.Equal(t, "pve-manager/8.3.0/c1689ccb1065a83b", nodes[0]["pve_version"])

	// A guest of a node another agent sent is unknown to this one.
	st, body := call(t, s, "POST", "/api/proxmox/lxc", a3.AccessToken, pxLXC)
	exact(t, http.StatusBadRequest, `{"error":"Node not found: pve1"}`, st, body)

	ct := ingested(t, s, "LXC", "/api/proxmox/lxc", a1.AccessToken, pxLXC)
	ct2 := ingested(t, s, "LXC", "/api/proxmox/lxc", a1.AccessToken,
		`{"name":"ct100","lxc_id":"lxc/100","status":"stopped","ostype":"ubuntu","uptime":0,"vmid":100,"node":"pve1"}`)
	require.Equal(t, ct, ct2)
	// The same vmid on the other agent's node is another container.
	ct3 := ingested(t, s, "LXC", "/api/proxmox/lxc", a2.AccessToken, pxLXC)
	require.NotEqual(t, ct, ct3)
	lxcs := s.ProxmoxRecords(ProxmoxLXC)
	require.Len(t, lxcs, 2)
	require.Equal(t, "stopped", lxcs[0]["status"])
	require.Equal(t, n1, lxcs[0]["node_id"])
	require.Equal(t, n2, lxcs[1]["node_id"])
	require.Equal(t, "", lxcs[0]["cluster_id"])

	// Two agents of one user report one cluster; it backfills each
	// agent's own records only.
	c1 := ingested(t, s, "Cluster", "/api/proxmox/cluster", a1.AccessToken, pxCluster)
	require.Equal(t, c1, s.ProxmoxRecords(ProxmoxNodes)[0]["cluster_id"])
	require.Equal(t, "", s.ProxmoxRecords(ProxmoxNodes)[1]["cluster_id"])
	c2 := ingested(t, s, "Cluster", "/api/proxmox/cluster", a2.AccessToken,
		`{"name":"lab","nodes":2,"quorate":1,"version":4,"px_cluster_id":"cluster"}`)
	require.Equal(t, c1, c2)
	// Another user's cluster of the same name is its own.
	c3 := ingested(t, s, "Cluster", "/api/proxmox/cluster", a3.AccessToken, pxCluster)
	require.NotEqual(t, c1, c3)
	clusters := s.ProxmoxRecords(ProxmoxClusters)
	require.Len(t, clusters, 2)
	require.Equal(t, []string{a1.AgentID, a2.AgentID}, clusters[0]["agents"])
	require.Equal(t, 2, clusters[0]["nodes"])
	require.Equal(t, 4, clusters[0]["version"])
	require.Equal(t, []string{a3.AgentID}, clusters[1]["agents"])
	for _, rec := range append(s.ProxmoxRecords(ProxmoxNodes), s.ProxmoxRecords(ProxmoxLXC)...) {
		require.Equal(t, c1, rec["cluster_id"], rec)
	}
	// Records made after the cluster are linked at once.
	vm := ingested(t, s, "QEMU VM", "/api/proxmox/qemu", a1.AccessToken, pxQEMU)
	rec := s.ProxmoxRecords(ProxmoxQEMU)[0]
	require.Equal(t, vm, rec["id"])
	require.Equal(t, c1, rec["cluster_id"])
}

func TestProxmoxListings(t *testing.T) {
	s := New(t, Options{})
	u1, u2 := s.CreateUser("u1@example.com"), s.CreateUser("u2@example.com")
	a1, a2 := s.RegisterAgent(u1, "pve1"), s.RegisterAgent(u2, "pve9")
	var ids []string
	for _, name := range []string{"pve1", "pve2", "pve3"} {
		ids = append(ids, ingested(t, s, "Node", "/api/proxmox/node", a1.AccessToken, `{"name":"`+name+`"}`))
	}
	ingested(t, s, "Node", "/api/proxmox/node", a2.AccessToken, `{"name":"pve9"}`)
	ingested(t, s, "LXC", "/api/proxmox/lxc", a1.AccessToken, `{"vmid":100,"node":"pve2"}`)

	st, body := call(t, s, "GET", "/api/proxmox/nodes?page=2&perPage=2", u1.Token, "")
	require.Equal(t, http.StatusOK, st, body)
	m := decode(t, body)
	require.Equal(t, float64(2), m["page"])
	require.Equal(t, float64(2), m["perPage"])
	require.Equal(t, float64(3), m["totalItems"])
	require.Equal(t, float64(2), m["totalPages"])
	items := m["items"].([]any)
	require.Len(t, items, 1)
	require.Equal(t, ids[2], items[0].(map[string]any)["id"])
	require.Equal(t, ProxmoxNodes, items[0].(map[string]any)["collectionName"])

	// Defaults: page 1, 20 a page; bad values are ignored.
	st, body = call(t, s, "GET", "/api/proxmox/nodes?page=x&perPage=-1", u1.Token, "")
	require.Equal(t, http.StatusOK, st, body)
	m = decode(t, body)
	require.Equal(t, float64(1), m["page"])
	require.Equal(t, float64(20), m["perPage"])
	require.Len(t, m["items"], 3)
	st, body = call(t, s, "GET", "/api/proxmox/lxc?node_id="+ids[1], u1.Token, "")
	require.Equal(t, http.StatusOK, st, body)
	require.Len(t, decode(t, body)["items"], 1)
	st, body = call(t, s, "GET", "/api/proxmox/lxc?node_id="+ids[0], u1.Token, "")
	require.Equal(t, http.StatusOK, st, body)
	exact(t, http.StatusOK, `{"page":1,"perPage":20,"totalItems":0,"totalPages":0,"items":[]}`, st, body)
	st, body = call(t, s, "GET", "/api/proxmox/clusters", u2.Token, "")
	exact(t, http.StatusOK, `{"page":1,"perPage":20,"totalItems":0,"totalPages":0,"items":[]}`, st, body)
	st, body = call(t, s, "GET", "/api/proxmox/nodes", "", "")
	exact(t, http.StatusUnauthorized, `{"data":{},"message":"The request requires valid record authorization token.","status":401}`, st, body)

	st, body = call(t, s, "GET", "/api/proxmox/nodes/"+ids[0], u1.Token, "")
	require.Equal(t, http.StatusOK, st, body)
	require.Equal(t, "pve1", decode(t, body)["name"])
	st, body = call(t, s, "GET", "/api/proxmox/nodes/"+ids[0], u2.Token, "")
	exact(t, http.StatusNotFound, notFoundBody, st, body)

	st, body = call(t, s, "DELETE", "/api/proxmox/nodes/"+ids[1], u2.Token, "")
	exact(t, http.StatusForbidden, `{"error":"Forbidden"}`, st, body)
	st, body = call(t, s, "DELETE", "/api/proxmox/nodes/"+ids[1], u1.Token, "")
	exact(t, http.StatusOK, `{"message":"Node deleted successfully"}`, st, body)
	st, body = call(t, s, "DELETE", "/api/proxmox/nodes/"+ids[1], u1.Token, "")
	exact(t, http.StatusNotFound, notFoundBody, st, body)
	// With its node gone, the node's guests are refused until it is sent
	// again.
	st, body = call(t, s, "POST", "/api/proxmox/lxc", a1.AccessToken, `{"vmid":100,"node":"pve2"}`)
	exact(t, http.StatusBadRequest, `{"error":"Node not found: pve2"}`, st, body)

	for _, p := range []string{"/api/proxmox/vms", "/api/proxmox/nodes/a/b", "/api/proxmox/nodes/"} {
		st, body = call(t, s, "GET", p, u1.Token, "")
		exact(t, http.StatusNotFound, notFoundBody, st, body)
	}
	st, body = call(t, s, "POST", "/api/proxmox/nodes", a1.AccessToken, pxNode)
	exact(t, http.StatusNotFound, notFoundBody, st, body)
}

// The server's fault switches apply to the ingestion routes like to any
// other; a faulted request never reaches the handler.
func TestProxmoxFault(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u1@example.com")
	a := s.RegisterAgent(u, "pve1")
	s.Inject("POST /api/proxmox/node", Fault{Status: http.StatusInternalServerError, Times: 1})
	st, body := call(t, s, "POST", "/api/proxmox/node", a.AccessToken, pxNode)
	exact(t, http.StatusInternalServerError, panicBody, st, body)
	ingested(t, s, "Node", "/api/proxmox/node", a.AccessToken, pxNode)
	require.Len(t, s.ProxmoxIngests(), 1)
	require.Equal(t, 2, s.Count("POST /api/proxmox/node"))
}
