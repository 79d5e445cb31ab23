package nannyapi

import (
	"context"
	"net/http"
	"strings"
)

// Proxmox VE inventory (NANNYAPI.md §2.8). The JSON tags are the ones
// the backend binds; it ignores every other field, so the payloads
// carry nothing else. agent_id and node_id are read by nobody (the
// backend takes the agent from the bearer and finds the node by name)
// but are part of the wire shape, as the earlier agent sent them.

// ProxmoxNode is a node of /cluster/status with the pveversion of
// /nodes/<name>/status.
type ProxmoxNode struct {
	ID         string `json:"id,omitempty"`
	AgentID    string `json:"agent_id"`
	ClusterID  string `json:"cluster_id,omitempty"`
	IP         string `json:"ip"`
	Level      string `json:"level"`
	Local      int    `json:"local"`
	Name       string `json:"name"`
	NodeID     int    `json:"nodeid"`
	Online     int    `json:"online"`
	PVEVersion string `json:"pveversion"`
}

// ProxmoxCluster is the cluster item of /cluster/status; ClusterID is
// its "id" (always "cluster" on PVE).
type ProxmoxCluster struct {
	Name      string `json:"name"`
	Nodes     int    `json:"nodes"`
	Quorate   int    `json:"quorate"`
	Version   int    `json:"version"`
	ClusterID string `json:"px_cluster_id"`
}

// ProxmoxLXC is a container of /cluster/resources with the ostype of
// its config. Node names the node it runs on, which the backend must
// already know from this agent.
type ProxmoxLXC struct {
	AgentID string `json:"agent_id"`
	NodeID  string `json:"node_id"`
	Name    string `json:"name"`
	LXCID   string `json:"lxc_id"`
	Status  string `json:"status"`
	OSType  string `json:"ostype"`
	Uptime  int    `json:"uptime"`
	VMID    int    `json:"vmid"`
	Node    string `json:"node"`
}

// ProxmoxQEMU is a virtual machine of /cluster/resources with fields of
// its config. The four config fields are left out when empty (a KVM
// disabled with kvm: 0 therefore reads as "not set" on the backend).
type ProxmoxQEMU struct {
	AgentID string `json:"agent_id"`
	NodeID  string `json:"node_id"`
	Name    string `json:"name"`
	QEMUID  string `json:"qemu_id"`
	Status  string `json:"status"`
	OSType  string `json:"ostype"`
	Uptime  int    `json:"uptime"`
	VMID    int    `json:"vmid"`
	VMGenID string `json:"vmgenid,omitempty"`
	KVM     int    `json:"kvm,omitempty"`
	Boot    string `json:"boot,omitempty"`
	CPU     string `json:"cpu,omitempty"`
	Node    string `json:"node"`
}

// ingestAnswer is the backend's answer to the four ingestion calls.
type ingestAnswer struct {
	Message string `json:"message"`
	ID      string `json:"id"`
}

func (c *Client) ingestProxmox(ctx context.Context, kind string, body any) (string, error) {
	path := "/api/proxmox/" + kind
	var out ingestAnswer
	err := c.do(ctx, &request{
		op: "POST " + path, method: http.MethodPost, path: path, auth: true, agentID: true, body: body, out: &out,
	})
	if err != nil {
		return "", err
	}
	return out.ID, nil
}

// IngestProxmoxNode upserts the node (by name, for this agent) and
// returns its record ID.
func (c *Client) IngestProxmoxNode(ctx context.Context, n ProxmoxNode) (string, error) {
	return c.ingestProxmox(ctx, "node", n)
}

// IngestProxmoxCluster upserts the cluster, adds this agent to it and
// returns its record ID.
func (c *Client) IngestProxmoxCluster(ctx context.Context, cl ProxmoxCluster) (string, error) {
	return c.ingestProxmox(ctx, "cluster", cl)
}

// IngestProxmoxLXC upserts a container (by vmid on its node) and
// returns its record ID. A node this agent has not sent yet is an
// *Error for which IsProxmoxNodeNotFound holds.
func (c *Client) IngestProxmoxLXC(ctx context.Context, ct ProxmoxLXC) (string, error) {
	return c.ingestProxmox(ctx, "lxc", ct)
}

// IngestProxmoxQEMU upserts a virtual machine (by vmid on its node) and
// returns its record ID; the node rule is IngestProxmoxLXC's.
func (c *Client) IngestProxmoxQEMU(ctx context.Context, vm ProxmoxQEMU) (string, error) {
	return c.ingestProxmox(ctx, "qemu", vm)
}

// proxmoxNodeNotFound prefixes the backend's refusal of a guest whose
// node it does not know for this agent.
const proxmoxNodeNotFound = "Node not found: "

// IsProxmoxNodeNotFound reports whether err is the backend's 400
// {"error":"Node not found: <name>"}: the guest's node must be sent
// (again) before the guest.
func IsProxmoxNodeNotFound(err error) bool {
	e, ok := AsError(err)
	return ok && e.Status == http.StatusBadRequest && !e.Envelope && strings.HasPrefix(e.Message, proxmoxNodeNotFound)
}
