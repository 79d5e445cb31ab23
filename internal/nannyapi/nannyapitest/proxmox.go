package nannyapitest

import (
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// The backend's Proxmox collections (§2.8).
const (
	ProxmoxClusters = "proxmox_cluster"
	ProxmoxNodes    = "proxmox_nodes"
	ProxmoxLXC      = "proxmox_lxc"
	ProxmoxQEMU     = "proxmox_qemu"
)

// Collection IDs of the Proxmox collections. The contract does not
// record the backend's own; these stand in for them so that records
// have the shape PocketBase gives them.
const (
	ProxmoxClustersCollectionID = "pbc_proxmox_cluster"
	ProxmoxNodesCollectionID    = "pbc_proxmox_nodes"
	ProxmoxLXCCollectionID      = "pbc_proxmox_lxc"
	ProxmoxQEMUCollectionID     = "pbc_proxmox_qemu"
)

// ProxmoxIngest is one ingestion request that reached the handler (a
// faulted one is only in Requests): its kind ("node", "cluster", "lxc",
// "qemu"), the agent its bearer named ("" when refused), the body as
// sent, the answer, and the record upserted on success.
type ProxmoxIngest struct {
	Kind     string
	AgentID  string
	Body     []byte
	Status   int
	Answer   string
	RecordID string
}

// pxCollection is one Proxmox collection: records as the listings show
// them, in creation order.
type pxCollection struct {
	id, name string
	order    []string
	recs     map[string]map[string]any
}

// proxmoxState holds the ingested clusters, nodes and guests (§2.8).
type proxmoxState struct {
	cols    map[string]*pxCollection
	ingests []ProxmoxIngest
}

// pxLocked returns the state, made on first use (the Server's zero
// value has none).
func (s *Server) pxLocked() *proxmoxState {
	p := &s.proxmox
	if p.cols == nil {
		p.cols = map[string]*pxCollection{}
		for name, id := range map[string]string{
			ProxmoxClusters: ProxmoxClustersCollectionID, ProxmoxNodes: ProxmoxNodesCollectionID,
			ProxmoxLXC: ProxmoxLXCCollectionID, ProxmoxQEMU: ProxmoxQEMUCollectionID,
		} {
			p.cols[name] = &pxCollection{id: id, name: name, recs: map[string]map[string]any{}}
		}
	}
	return p
}

func (c *pxCollection) insert(rec map[string]any) {
	rec["collectionId"] = c.id
	rec["collectionName"] = c.name
	id := rec["id"].(string)
	c.order = append(c.order, id)
	c.recs[id] = rec
}

// find returns the first record (in creation order) for which match
// holds.
func (c *pxCollection) find(match func(rec map[string]any) bool) map[string]any {
	for _, id := range c.order {
		if rec := c.recs[id]; match(rec) {
			return rec
		}
	}
	return nil
}

// ProxmoxIngests returns the ingestion requests the handler saw, oldest
// first.
func (s *Server) ProxmoxIngests() []ProxmoxIngest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxmoxIngest, 0, len(s.proxmox.ingests))
	for _, in := range s.proxmox.ingests {
		in.Body = slices.Clone(in.Body)
		out = append(out, in)
	}
	return out
}

// ProxmoxRecords returns copies of a Proxmox collection's records
// (ProxmoxClusters, ProxmoxNodes, ProxmoxLXC, ProxmoxQEMU) in creation
// order, as the listings show them.
func (s *Server) ProxmoxRecords(collection string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.pxLocked().cols[collection]
	if !ok {
		return nil
	}
	out := make([]map[string]any, 0, len(c.order))
	for _, id := range c.order {
		out = append(out, copyPXRecord(c.recs[id]))
	}
	return out
}

// copyPXRecord copies a record, including the cluster's agents list.
func copyPXRecord(rec map[string]any) map[string]any {
	out := copyRecord(rec)
	if a, ok := out["agents"].([]string); ok {
		out["agents"] = slices.Clone(a)
	}
	return out
}

// handleProxmox serves /api/proxmox/{node,cluster,lxc,qemu} and the
// user listings /api/proxmox/{clusters,nodes,lxc,qemu}[/{id}].
func (s *Server) handleProxmox(w http.ResponseWriter, r *http.Request, body []byte) {
	rest := strings.TrimPrefix(r.URL.Path, "/api/proxmox/")
	kind, id, hasID := strings.Cut(rest, "/")
	if r.Method == http.MethodPost && !hasID {
		switch kind {
		case "node", "cluster", "lxc", "qemu":
			s.ingestProxmox(w, r, kind, body)
			return
		}
	}
	name, ok := map[string]string{
		"clusters": ProxmoxClusters, "nodes": ProxmoxNodes, "lxc": ProxmoxLXC, "qemu": ProxmoxQEMU,
	}[kind]
	switch {
	case !ok || (hasID && (id == "" || strings.Contains(id, "/"))):
		notFound(w)
	case r.Method == http.MethodGet && !hasID:
		s.listProxmox(w, r, name)
	case r.Method == http.MethodGet:
		s.getProxmox(w, r, name, id)
	case r.Method == http.MethodDelete && hasID:
		s.deleteProxmox(w, r, name, id)
	default:
		notFound(w)
	}
}

// The bodies the backend binds (its types.Proxmox* structs): numbers
// are Go ints, so a fraction or a quoted number does not parse.
type pxNodeBody struct {
	IP         string `json:"ip"`
	Level      string `json:"level"`
	Local      int    `json:"local"`
	Name       string `json:"name"`
	NodeID     int    `json:"nodeid"`
	Online     int    `json:"online"`
	PVEVersion string `json:"pveversion"`
}

type pxClusterBody struct {
	Name      string `json:"name"`
	Nodes     int    `json:"nodes"`
	Quorate   int    `json:"quorate"`
	Version   int    `json:"version"`
	ClusterID string `json:"px_cluster_id"`
}

type pxGuestBody struct {
	Name    string `json:"name"`
	LXCID   string `json:"lxc_id"`
	QEMUID  string `json:"qemu_id"`
	Status  string `json:"status"`
	OSType  string `json:"ostype"`
	Uptime  int    `json:"uptime"`
	VMID    int    `json:"vmid"`
	VMGenID string `json:"vmgenid"`
	KVM     int    `json:"kvm"`
	Boot    string `json:"boot"`
	CPU     string `json:"cpu"`
	Node    string `json:"node"`
}

// ingestProxmox is the backend's four ingestion handlers: agent tokens
// only, then the body, then the upsert.
func (s *Server) ingestProxmox(w http.ResponseWriter, r *http.Request, kind string, body []byte) {
	auth := s.authenticate(r)
	in := ProxmoxIngest{Kind: kind, Body: slices.Clone(body)}
	answer := func(status int, v any) {
		enc := encode(v)
		in.Status, in.Answer = status, enc
		s.mu.Lock()
		p := s.pxLocked()
		p.ingests = append(p.ingests, in)
		s.notifyLocked()
		s.mu.Unlock()
		writeRaw(w, status, enc)
	}
	if !auth.isAgent() {
		answer(http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
		return
	}
	in.AgentID = auth.id
	var target any
	var node pxNodeBody
	var cluster pxClusterBody
	var guest pxGuestBody
	switch kind {
	case "node":
		target = &node
	case "cluster":
		target = &cluster
	default:
		target = &guest
	}
	if json.Unmarshal(body, target) != nil {
		answer(http.StatusBadRequest, map[string]string{"error": "Invalid request body"})
		return
	}

	s.mu.Lock()
	p := s.pxLocked()
	a, ok := s.agents[auth.id]
	userID := ""
	if ok {
		userID = a.userID
	}
	now := formatPB(s.Now())
	// The cluster a node or guest is linked to: the first whose agents
	// hold this agent.
	clusterOf := func() string {
		c := p.cols[ProxmoxClusters].find(func(rec map[string]any) bool {
			return slices.Contains(rec["agents"].([]string), auth.id)
		})
		if c == nil {
			return ""
		}
		return c["id"].(string)
	}
	var rec map[string]any
	var message string
	switch kind {
	case "node":
		rec, message = upsertPXNode(p, auth.id, userID, node, clusterOf(), now), "Node ingested successfully"
	case "cluster":
		rec, message = upsertPXCluster(p, auth.id, userID, cluster, now), "Cluster ingested successfully"
	default:
		nodeRec := p.cols[ProxmoxNodes].find(func(rec map[string]any) bool {
			return rec["name"] == guest.Node && rec["agent_id"] == auth.id
		})
		if nodeRec == nil {
			s.mu.Unlock()
			answer(http.StatusBadRequest, map[string]string{"error": "Node not found: " + guest.Node})
			return
		}
		rec = upsertPXGuest(p, kind, auth.id, userID, nodeRec["id"].(string), clusterOf(), guest, now)
		message = map[string]string{"lxc": "LXC ingested successfully", "qemu": "QEMU VM ingested successfully"}[kind]
	}
	in.RecordID = rec["id"].(string)
	s.mu.Unlock()
	answer(http.StatusOK, map[string]string{"message": message, "id": in.RecordID})
}

// upsertPXNode upserts by (name, agent).
func upsertPXNode(p *proxmoxState, agentID, userID string, b pxNodeBody, clusterID, now string) map[string]any {
	c := p.cols[ProxmoxNodes]
	rec := c.find(func(rec map[string]any) bool { return rec["name"] == b.Name && rec["agent_id"] == agentID })
	if rec == nil {
		rec = map[string]any{"id": pbID(), "cluster_id": ""}
		c.insert(rec)
	}
	if clusterID != "" {
		rec["cluster_id"] = clusterID
	}
	for k, v := range map[string]any{
		"ip": b.IP, "level": b.Level, "local": b.Local, "name": b.Name, "pve_version": b.PVEVersion,
		"px_node_id": b.NodeID, "online": b.Online, "recorded_at": now, "agent_id": agentID, "user_id": userID,
	} {
		rec[k] = v
	}
	return rec
}

// upsertPXCluster upserts by (cluster_name, user), adds the agent to
// agents and backfills cluster_id on this agent's records that have
// none.
func upsertPXCluster(p *proxmoxState, agentID, userID string, b pxClusterBody, now string) map[string]any {
	c := p.cols[ProxmoxClusters]
	rec := c.find(func(rec map[string]any) bool { return rec["cluster_name"] == b.Name && rec["user_id"] == userID })
	if rec == nil {
		rec = map[string]any{"id": pbID(), "agents": []string{}}
		c.insert(rec)
	}
	for k, v := range map[string]any{
		"cluster_name": b.Name, "nodes": b.Nodes, "quorate": b.Quorate, "version": b.Version,
		"px_cluster_id": b.ClusterID, "user_id": userID, "recorded_at": now,
	} {
		rec[k] = v
	}
	if agents := rec["agents"].([]string); !slices.Contains(agents, agentID) {
		rec["agents"] = append(slices.Clone(agents), agentID)
	}
	for _, name := range []string{ProxmoxNodes, ProxmoxLXC, ProxmoxQEMU} {
		for _, o := range p.cols[name].recs {
			if o["agent_id"] == agentID && o["cluster_id"] == "" {
				o["cluster_id"] = rec["id"]
			}
		}
	}
	return rec
}

// upsertPXGuest upserts an LXC or QEMU record by (vmid, node).
func upsertPXGuest(p *proxmoxState, kind, agentID, userID, nodeID, clusterID string, b pxGuestBody, now string) map[string]any {
	c := p.cols[ProxmoxLXC]
	if kind == "qemu" {
		c = p.cols[ProxmoxQEMU]
	}
	rec := c.find(func(rec map[string]any) bool { return rec["vmid"] == b.VMID && rec["node_id"] == nodeID })
	if rec == nil {
		rec = map[string]any{"id": pbID(), "cluster_id": ""}
		c.insert(rec)
	}
	if clusterID != "" {
		rec["cluster_id"] = clusterID
	}
	fields := map[string]any{
		"node_id": nodeID, "name": b.Name, "status": b.Status, "ostype": b.OSType, "uptime": b.Uptime,
		"vmid": b.VMID, "recorded_at": now, "agent_id": agentID, "user_id": userID,
	}
	if kind == "qemu" {
		fields["qemu_id"], fields["vmgenid"], fields["kvm"], fields["boot"], fields["host_cpu"] = b.QEMUID, b.VMGenID, b.KVM, b.Boot, b.CPU
	} else {
		fields["lxc_id"] = b.LXCID
	}
	for k, v := range fields {
		rec[k] = v
	}
	return rec
}

// proxmoxListPerPage is the listings' default page size.
const proxmoxListPerPage = 20

// pxOwner authenticates a listing: any valid token, whose owner's
// records it shows. A guest gets PocketBase's RequireAuth answer.
func (s *Server) pxOwner(w http.ResponseWriter, r *http.Request) (string, bool) {
	auth := s.authenticate(r)
	if auth == nil {
		writeRaw(w, http.StatusUnauthorized, envelope(http.StatusUnauthorized, "The request requires valid record authorization token.", nil))
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ownerLocked(auth), true
}

// listProxmox is GET /api/proxmox/{clusters,nodes,lxc,qemu}: page (from
// 1) and perPage (default 20) as the backend reads them (a bad value is
// ignored), the cluster_id and node_id filters, creation order.
func (s *Server) listProxmox(w http.ResponseWriter, r *http.Request, name string) {
	owner, ok := s.pxOwner(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	page, perPage := 1, proxmoxListPerPage
	if v, err := strconv.Atoi(q.Get("page")); err == nil && v > 0 {
		page = v
	}
	if v, err := strconv.Atoi(q.Get("perPage")); err == nil && v > 0 {
		perPage = v
	}
	s.mu.Lock()
	c := s.pxLocked().cols[name]
	var items []map[string]any
	for _, id := range c.order {
		rec := c.recs[id]
		if rec["user_id"] != owner {
			continue
		}
		if v := q.Get("cluster_id"); v != "" && name != ProxmoxClusters && rec["cluster_id"] != v {
			continue
		}
		if v := q.Get("node_id"); v != "" && (name == ProxmoxLXC || name == ProxmoxQEMU) && rec["node_id"] != v {
			continue
		}
		items = append(items, copyPXRecord(rec))
	}
	s.mu.Unlock()
	total := len(items)
	from := min((page-1)*perPage, total)
	to := min(from+perPage, total)
	out := items[from:to]
	if out == nil {
		out = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, struct {
		Page       int              `json:"page"`
		PerPage    int              `json:"perPage"`
		TotalItems int              `json:"totalItems"`
		TotalPages int              `json:"totalPages"`
		Items      []map[string]any `json:"items"`
	}{page, perPage, total, int(math.Ceil(float64(total) / float64(perPage))), out})
}

// getProxmox is GET /api/proxmox/{kind}/{id}: the record, or
// PocketBase's 404 (also for another user's record).
func (s *Server) getProxmox(w http.ResponseWriter, r *http.Request, name, id string) {
	owner, ok := s.pxOwner(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	rec, found := s.pxLocked().cols[name].recs[id]
	if found {
		rec = copyPXRecord(rec)
	}
	s.mu.Unlock()
	if !found || rec["user_id"] != owner {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// deleteProxmox is DELETE /api/proxmox/{kind}/{id}: 403
// {"error":"Forbidden"} for another user's record.
func (s *Server) deleteProxmox(w http.ResponseWriter, r *http.Request, name, id string) {
	owner, ok := s.pxOwner(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	c := s.pxLocked().cols[name]
	rec, found := c.recs[id]
	switch {
	case !found:
		s.mu.Unlock()
		notFound(w)
		return
	case rec["user_id"] != owner:
		s.mu.Unlock()
		errorJSON(w, http.StatusForbidden, "Forbidden")
		return
	}
	delete(c.recs, id)
	c.order = slices.DeleteFunc(c.order, func(x string) bool { return x == id })
	s.notifyLocked()
	s.mu.Unlock()
	kind := map[string]string{ProxmoxClusters: "Cluster", ProxmoxNodes: "Node", ProxmoxLXC: "LXC", ProxmoxQEMU: "QEMU VM"}[name]
	writeJSON(w, http.StatusOK, map[string]string{"message": kind + " deleted successfully"})
}
