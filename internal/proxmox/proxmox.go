// Package proxmox reports a Proxmox VE node's inventory to NannyAPI
// (NANNYAPI.md §2.8): the node the agent runs on, its cluster, and the
// LXC containers and QEMU virtual machines on that node, read with
// pvesh and sent to /api/proxmox/{node,cluster,lxc,qemu}.
//
// The Reporter is a daemon component: on a host that is not a PVE node
// it logs that once and idles; on a node it waits InitialDelay, then
// runs a cycle every Interval. A cycle's errors are logged item by item
// and never end the Reporter.
package proxmox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"go.uber.org/zap"
)

// Backend receives the inventory; *nannyapi.Client is one.
type Backend interface {
	IngestProxmoxNode(ctx context.Context, n nannyapi.ProxmoxNode) (string, error)
	IngestProxmoxCluster(ctx context.Context, c nannyapi.ProxmoxCluster) (string, error)
	IngestProxmoxLXC(ctx context.Context, ct nannyapi.ProxmoxLXC) (string, error)
	IngestProxmoxQEMU(ctx context.Context, vm nannyapi.ProxmoxQEMU) (string, error)
}

// Defaults of Options.
const (
	DefaultPVEVersion   = "/usr/bin/pveversion"
	DefaultPvesh        = "/usr/bin/pvesh"
	DefaultInitialDelay = 10 * time.Second
	DefaultInterval     = 300 * time.Second
)

// Options configure a Reporter. Backend is required.
type Options struct {
	Backend Backend
	// AgentID is sent as agent_id (the backend takes the agent from the
	// bearer; the field is informational).
	AgentID string
	// Config supplies proxmox_interval; Interval, when set, overrides it
	// (default 300 s).
	Config   *config.Config
	Interval time.Duration
	// InitialDelay is the wait before the first cycle (default 10 s),
	// which leaves the node's services time to settle at boot.
	InitialDelay time.Duration
	// PVEVersion and Pvesh are the commands' paths (defaults
	// /usr/bin/pveversion and /usr/bin/pvesh). A node is a PVE node when
	// PVEVersion exists and `PVEVersion --verbose` succeeds.
	PVEVersion string
	Pvesh      string
	// Commands runs them (default: ExecRunner with CommandTimeout and
	// MaxOutputBytes).
	Commands       CommandRunner
	CommandTimeout time.Duration
	// MaxOutputBytes bounds one command's output (default 16 MiB); more
	// is an error for that call.
	MaxOutputBytes int64
	Logger         *zap.Logger
	// Sleep waits between cycles (default: a timer); it returns ctx's
	// error when ctx ends first. Tests pace the loop with it.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Reporter collects and sends the inventory.
type Reporter struct {
	o   Options
	log *zap.Logger
}

// New checks o and fills in the defaults.
func New(o Options) (*Reporter, error) {
	if o.Backend == nil {
		return nil, errors.New("proxmox: a backend client is required")
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
		if o.Config != nil && o.Config.ProxmoxInterval > 0 {
			o.Interval = time.Duration(o.Config.ProxmoxInterval) * time.Second
		}
	}
	if o.InitialDelay <= 0 {
		o.InitialDelay = DefaultInitialDelay
	}
	if o.PVEVersion == "" {
		o.PVEVersion = DefaultPVEVersion
	}
	if o.Pvesh == "" {
		o.Pvesh = DefaultPvesh
	}
	if o.MaxOutputBytes <= 0 {
		o.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if o.Commands == nil {
		o.Commands = ExecRunner{Timeout: o.CommandTimeout, MaxOutput: o.MaxOutputBytes}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Sleep == nil {
		o.Sleep = nannyapi.Sleep
	}
	return &Reporter{o: o, log: o.Logger}, nil
}

// ErrNotProxmox is wrapped by Detect's error on a host that is not a
// Proxmox VE node.
var ErrNotProxmox = errors.New("not a Proxmox VE node")

// Detect reports whether this host is a Proxmox VE node: nil when
// PVEVersion is an executable file and `PVEVersion --verbose` succeeds,
// else an error wrapping ErrNotProxmox that says which check failed.
func (r *Reporter) Detect(ctx context.Context) error {
	fi, err := os.Stat(r.o.PVEVersion)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrNotProxmox, err)
	case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%w: %s is not an executable file", ErrNotProxmox, r.o.PVEVersion)
	}
	if _, err := r.o.Commands.Run(ctx, r.o.PVEVersion, "--verbose"); err != nil {
		return fmt.Errorf("%w: %w", ErrNotProxmox, err)
	}
	return nil
}

// Run is the daemon component: it returns nil, and only when ctx ends.
func (r *Reporter) Run(ctx context.Context) error {
	if err := r.Detect(ctx); err != nil {
		if ctx.Err() == nil {
			r.log.Info("the Proxmox VE inventory is off on this host", zap.Error(err))
			<-ctx.Done()
		}
		return nil
	}
	r.log.Info("Proxmox VE node: reporting its inventory",
		zap.Duration("first_in", r.o.InitialDelay), zap.Duration("interval", r.o.Interval))
	if r.o.Sleep(ctx, r.o.InitialDelay) != nil {
		return nil
	}
	for {
		rep := r.Cycle(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.logReport(rep)
		if r.o.Sleep(ctx, r.o.Interval) != nil {
			return nil
		}
	}
}

func (r *Reporter) logReport(rep Report) {
	fields := []zap.Field{zap.String("node", rep.Node), zap.Strings("sent", rep.Sent), zap.Int("errors", len(rep.Errors))}
	if rep.NodeResent {
		fields = append(fields, zap.Bool("node_resent", true))
	}
	if len(rep.Errors) == 0 {
		r.log.Info("Proxmox VE inventory sent", fields...)
		return
	}
	r.log.Warn("Proxmox VE inventory sent in part", fields...)
}

// Report says what a cycle did.
type Report struct {
	// Node is this node's name ("" when /cluster/status failed).
	Node string
	// Sent are the items the backend accepted, in order, named as PVE
	// names them: "node/pve2", "cluster", "lxc/101", "qemu/200".
	Sent []string
	// NodeResent is true when a guest was refused for an unknown node
	// and the node was sent again.
	NodeResent bool
	// Errors are the items that failed (each an *ItemError) or the
	// error that stopped the cycle.
	Errors []error
}

// ItemError is one item that could not be read or sent.
type ItemError struct {
	// Item is named as in Report.Sent; "inventory" when the cycle could
	// not start.
	Item string
	Err  error
}

func (e *ItemError) Error() string { return e.Item + ": " + e.Err.Error() }
func (e *ItemError) Unwrap() error { return e.Err }

// item is one thing to send.
type item struct {
	id   string // "node/pve2", "lxc/101"
	send func(ctx context.Context) error
}

// Cycle reads the inventory and sends it once: node, cluster, the
// LXCs, the QEMU VMs. Every item's error is logged and the rest go on.
func (r *Reporter) Cycle(ctx context.Context) Report {
	var rep Report
	fail := func(id string, err error) {
		if ctx.Err() != nil {
			return
		}
		ie := &ItemError{Item: id, Err: err}
		rep.Errors = append(rep.Errors, ie)
		r.log.Warn("Proxmox VE inventory item not sent", zap.String("item", id), zap.Error(err))
	}
	inv, err := r.collect(ctx, fail)
	if err != nil {
		fail("inventory", err)
		return rep
	}
	rep.Node = inv.nodeName

	send := func(it item) error {
		if err := it.send(ctx); err != nil {
			return err
		}
		rep.Sent = append(rep.Sent, it.id)
		return nil
	}
	if inv.node != nil {
		if err := send(*inv.node); err != nil {
			fail(inv.node.id, err)
		}
	}
	if inv.cluster != nil && ctx.Err() == nil {
		if err := send(*inv.cluster); err != nil {
			fail(inv.cluster.id, err)
		}
	}
	for _, g := range inv.guests {
		if ctx.Err() != nil {
			break
		}
		err := send(g)
		// The backend refuses guests of a node it does not know for this
		// agent (a node ingest failed, or its record was deleted): send
		// the node again, once a cycle, and this guest after it.
		if nannyapi.IsProxmoxNodeNotFound(err) && !rep.NodeResent && inv.node != nil {
			rep.NodeResent = true
			r.log.Info("the backend does not know this node; sending it again", zap.String("item", g.id))
			if nerr := send(*inv.node); nerr != nil {
				fail(inv.node.id, nerr)
			} else {
				err = send(g)
			}
		}
		if err != nil {
			fail(g.id, err)
		}
	}
	return rep
}

// inventory is one cycle's reading.
type inventory struct {
	nodeName string
	node     *item
	cluster  *item
	guests   []item // LXCs then QEMU VMs, each by vmid
}

// collect reads the inventory. Only a failure to find this node ends
// it; an item that cannot be read is reported through fail and left
// out.
func (r *Reporter) collect(ctx context.Context, fail func(string, error)) (*inventory, error) {
	status, err := r.pveshArray(ctx, "/cluster/status")
	if err != nil {
		return nil, err
	}
	var local, cluster object
	for i, it := range status {
		typ, err := it.str("type")
		if err != nil {
			return nil, fmt.Errorf("pvesh get /cluster/status: item %d: %w", i, err)
		}
		switch typ {
		case "cluster":
			if cluster == nil {
				cluster = it
			}
		case "node":
			isLocal, err := it.int("local")
			if err != nil {
				return nil, fmt.Errorf("pvesh get /cluster/status: item %d: %w", i, err)
			}
			if isLocal == 1 && local == nil {
				local = it
			}
		}
	}
	if local == nil {
		return nil, errors.New("pvesh get /cluster/status: no item of type node with local 1 (this node)")
	}
	nodeName, err := local.str("name")
	if err != nil {
		return nil, fmt.Errorf("pvesh get /cluster/status: this node: %w", err)
	}
	if err := validNodeName(nodeName); err != nil {
		return nil, fmt.Errorf("pvesh get /cluster/status: this node: %w", err)
	}
	inv := &inventory{nodeName: nodeName}

	if n, err := r.nodePayload(ctx, local, nodeName); err != nil {
		fail("node/"+nodeName, err)
	} else {
		inv.node = &item{id: "node/" + nodeName, send: func(ctx context.Context) error {
			_, err := r.o.Backend.IngestProxmoxNode(ctx, n)
			return err
		}}
	}
	if cluster != nil {
		f := fields{o: cluster}
		c := nannyapi.ProxmoxCluster{
			Name: f.str("name"), Nodes: f.int("nodes"), Quorate: f.int("quorate"),
			Version: f.int("version"), ClusterID: f.str("id"),
		}
		if f.err != nil {
			fail("cluster", fmt.Errorf("pvesh get /cluster/status: the cluster item: %w", f.err))
		} else {
			inv.cluster = &item{id: "cluster", send: func(ctx context.Context) error {
				_, err := r.o.Backend.IngestProxmoxCluster(ctx, c)
				return err
			}}
		}
	}

	resources, err := r.pveshArray(ctx, "/cluster/resources")
	if err != nil {
		fail("guests", err)
		return inv, nil
	}
	var lxcs, vms []item
	for i, res := range resources {
		typ, err := res.str("type")
		if err != nil {
			fail("guests", fmt.Errorf("pvesh get /cluster/resources: item %d: %w", i, err))
			continue
		}
		if typ != "lxc" && typ != "qemu" {
			continue
		}
		node, err := res.str("node")
		if err != nil {
			fail("guests", fmt.Errorf("pvesh get /cluster/resources: item %d: %w", i, err))
			continue
		}
		if node != nodeName {
			continue
		}
		g, vmid, err := r.guest(ctx, typ, nodeName, res)
		if err != nil {
			id := fmt.Sprintf("%s (item %d of /cluster/resources)", typ, i)
			if vmid > 0 {
				id = typ + "/" + strconv.Itoa(vmid)
			}
			fail(id, err)
			continue
		}
		if typ == "lxc" {
			lxcs = append(lxcs, g)
		} else {
			vms = append(vms, g)
		}
	}
	byID := func(a, b item) int { return guestNumber(a.id) - guestNumber(b.id) }
	slices.SortStableFunc(lxcs, byID)
	slices.SortStableFunc(vms, byID)
	inv.guests = append(lxcs, vms...)
	return inv, nil
}

func guestNumber(id string) int {
	_, n, _ := strings.Cut(id, "/")
	v, _ := strconv.Atoi(n)
	return v
}

// nodePayload is this node's item of /cluster/status with the
// pveversion of /nodes/<name>/status.
func (r *Reporter) nodePayload(ctx context.Context, local object, name string) (nannyapi.ProxmoxNode, error) {
	f := fields{o: local}
	n := nannyapi.ProxmoxNode{
		AgentID: r.o.AgentID, IP: f.str("ip"), Level: f.str("level"), Local: f.int("local"), Name: name,
		NodeID: f.int("nodeid"), Online: f.int("online"),
	}
	if f.err != nil {
		return n, fmt.Errorf("pvesh get /cluster/status: this node: %w", f.err)
	}
	path := "/nodes/" + name + "/status"
	st, err := r.pveshObject(ctx, path)
	if err != nil {
		return n, err
	}
	v, err := st.str("pveversion")
	if err != nil {
		return n, fmt.Errorf("pvesh get %s: %w", path, err)
	}
	if v == "" {
		return n, fmt.Errorf("pvesh get %s: no pveversion", path)
	}
	n.PVEVersion = v
	return n, nil
}

// guest builds a container's or VM's item from its /cluster/resources
// entry and its config. vmid is returned when it was read, to name the
// guest in errors.
func (r *Reporter) guest(ctx context.Context, typ, node string, res object) (item, int, error) {
	f := fields{o: res}
	vmid, name, status, uptime, id := f.int("vmid"), f.str("name"), f.str("status"), f.int("uptime"), f.str("id")
	if f.err != nil {
		return item{}, 0, fmt.Errorf("pvesh get /cluster/resources: %w", f.err)
	}
	if vmid < 1 || vmid > 999999999 {
		return item{}, 0, fmt.Errorf("pvesh get /cluster/resources: vmid %d is not a PVE guest ID (1 to 999999999)", vmid)
	}
	if id == "" {
		id = typ + "/" + strconv.Itoa(vmid)
	}
	path := "/nodes/" + node + "/" + typ + "/" + strconv.Itoa(vmid) + "/config"
	cfg, err := r.pveshObject(ctx, path)
	if err != nil {
		return item{}, vmid, err
	}
	c := fields{o: cfg}
	ostype := c.str("ostype")
	it := item{id: typ + "/" + strconv.Itoa(vmid)}
	if typ == "lxc" {
		ct := nannyapi.ProxmoxLXC{
			AgentID: r.o.AgentID, Name: name, LXCID: id, Status: status, OSType: ostype,
			Uptime: uptime, VMID: vmid, Node: node,
		}
		it.send = func(ctx context.Context) error {
			_, err := r.o.Backend.IngestProxmoxLXC(ctx, ct)
			return err
		}
	} else {
		vm := nannyapi.ProxmoxQEMU{
			AgentID: r.o.AgentID, Name: name, QEMUID: id, Status: status, OSType: ostype,
			Uptime: uptime, VMID: vmid, VMGenID: c.str("vmgenid"), KVM: c.int("kvm"),
			Boot: c.str("boot"), CPU: c.str("cpu"), Node: node,
		}
		it.send = func(ctx context.Context) error {
			_, err := r.o.Backend.IngestProxmoxQEMU(ctx, vm)
			return err
		}
	}
	if c.err != nil {
		return item{}, vmid, fmt.Errorf("pvesh get %s: %w", path, c.err)
	}
	return it, vmid, nil
}

// validNodeName admits PVE node names (host names): letters, digits,
// dots and hyphens, starting with a letter or digit, so that the name
// can only ever be one path segment of a pvesh argument.
func validNodeName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("node name %q must be 1 to 253 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !alnum && (i == 0 || (c != '.' && c != '-')) {
			return fmt.Errorf("node name %q is not a host name (letters, digits, dots and hyphens, starting with a letter or digit)", name)
		}
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("node name %q is not a host name (empty label)", name)
	}
	return nil
}

// pvesh runs `pvesh get <path> --output-format json` and bounds its
// output.
func (r *Reporter) pvesh(ctx context.Context, path string) ([]byte, error) {
	out, err := r.o.Commands.Run(ctx, r.o.Pvesh, "get", path, "--output-format", "json")
	if err != nil {
		return nil, fmt.Errorf("pvesh get %s: %w", path, err)
	}
	if int64(len(out)) > r.o.MaxOutputBytes {
		return nil, fmt.Errorf("pvesh get %s: %w: %d bytes, more than %d", path, ErrOutputTooLarge, len(out), r.o.MaxOutputBytes)
	}
	return out, nil
}

func (r *Reporter) pveshArray(ctx context.Context, path string) ([]object, error) {
	out, err := r.pvesh(ctx, path)
	if err != nil {
		return nil, err
	}
	items, err := decodeArray(out)
	if err != nil {
		return nil, fmt.Errorf("pvesh get %s: %w", path, err)
	}
	return items, nil
}

func (r *Reporter) pveshObject(ctx context.Context, path string) (object, error) {
	out, err := r.pvesh(ctx, path)
	if err != nil {
		return nil, err
	}
	o, err := decodeObject(out)
	if err != nil {
		return nil, fmt.Errorf("pvesh get %s: %w", path, err)
	}
	return o, nil
}
