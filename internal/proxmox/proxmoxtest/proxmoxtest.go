// Package proxmoxtest stands in for a Proxmox VE node in tests: fake
// pveversion and pvesh commands (shell scripts) that serve the pvesh
// outputs recorded in internal/proxmox/testdata, and the payloads those
// outputs must become on the wire (NANNYAPI.md §2.8).
package proxmoxtest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Fixture sets under internal/proxmox/testdata.
const (
	// Cluster3 is node pve2 of the three-node cluster "lab": pve1 and
	// pve3 (offline) have guests of their own, which pve2 must not
	// report.
	Cluster3 = "cluster3"
	// Standalone is node "pve" without a cluster, with the numbers of
	// its outputs partly in the string form PVE's Perl encoder also
	// prints ("vmid":"100").
	Standalone = "standalone"
)

// Dir is the directory of a fixture set: <dir>/cluster/status.json is
// the output of `pvesh get /cluster/status --output-format json`, and
// so on for every path.
func Dir(set string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", set)
}

// Fake is a fake pveversion and pvesh for one fixture set.
type Fake struct {
	// PVEVersion and Pvesh are the commands' absolute paths.
	PVEVersion, Pvesh string
	overlay, log      string
}

// New writes the fake commands into a temporary directory. pvesh
// answers `get <path> --output-format json` with the fixture of path
// (or an Override or Fail of it) and fails like pvesh for paths it has
// no fixture for; every call is logged for Calls.
func New(t testing.TB, set string) *Fake {
	t.Helper()
	dir := t.TempDir()
	f := &Fake{
		PVEVersion: filepath.Join(dir, "pveversion"), Pvesh: filepath.Join(dir, "pvesh"),
		overlay: filepath.Join(dir, "overlay"), log: filepath.Join(dir, "pvesh.log"),
	}
	fixtures := Dir(set)
	if _, err := os.Stat(filepath.Join(fixtures, "cluster", "status.json")); err != nil {
		t.Fatalf("proxmoxtest: fixture set %q: %v", set, err)
	}
	pveversion := "#!/bin/sh\n" +
		"[ \"$#\" -eq 1 ] && [ \"$1\" = --verbose ] || { echo \"fake pveversion: unexpected arguments: $*\" >&2; exit 2; }\n" +
		"exec cat " + quote(filepath.Join(fixtures, "..", "pveversion-verbose.txt")) + "\n"
	pvesh := "#!/bin/sh\n" +
		"printf '%s\\n' \"$*\" >> " + quote(f.log) + "\n" +
		"if [ \"$#\" -ne 4 ] || [ \"$1\" != get ] || [ \"$3\" != --output-format ] || [ \"$4\" != json ]; then\n" +
		"  echo \"fake pvesh: unexpected arguments: $*\" >&2; exit 255\n" +
		"fi\n" +
		"for d in " + quote(f.overlay) + " " + quote(fixtures) + "; do\n" +
		"  if [ -f \"$d$2.err\" ]; then cat \"$d$2.err\" >&2; exit 2; fi\n" +
		"  if [ -f \"$d$2.json\" ]; then exec cat \"$d$2.json\"; fi\n" +
		"done\n" +
		"echo \"no such resource '$2'\" >&2\n" +
		"exit 2\n"
	for path, body := range map[string]string{f.PVEVersion: pveversion, f.Pvesh: pvesh} {
		if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
			t.Fatalf("proxmoxtest: %v", err)
		}
	}
	return f
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Override makes pvesh answer path ("/cluster/status") with out.
func (f *Fake) Override(t testing.TB, path string, out []byte) {
	t.Helper()
	f.write(t, path+".json", out)
}

// Fail makes pvesh fail for path, printing msg on standard error.
func (f *Fake) Fail(t testing.TB, path, msg string) {
	t.Helper()
	f.write(t, path+".err", []byte(msg+"\n"))
}

func (f *Fake) write(t testing.TB, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(f.overlay, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatalf("proxmoxtest: %v", err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatalf("proxmoxtest: %v", err)
	}
}

// Reset drops every Override and Fail.
func (f *Fake) Reset(t testing.TB) {
	t.Helper()
	if err := os.RemoveAll(f.overlay); err != nil {
		t.Fatalf("proxmoxtest: %v", err)
	}
}

// Calls are the pvesh paths asked for, in order.
func (f *Fake) Calls(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(f.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("proxmoxtest: %v", err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(line, "get "), " --output-format json"))
	}
	return out
}

// Payload is one ingestion the fixtures must produce: the endpoint and
// the exact JSON body.
type Payload struct {
	Path string
	Body string
}

// Fields decodes a body for a field-by-field comparison.
func Fields(t testing.TB, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("proxmoxtest: body %q: %v", body, err)
	}
	return m
}

// Want is what a node of the fixture set sends in one cycle, in order:
// node, cluster, LXCs by vmid, QEMU VMs by vmid. Every value was read
// off the fixture files by hand.
func Want(set, agentID string) []Payload {
	a := agentID
	switch set {
	case Cluster3:
		return []Payload{
			{"/api/proxmox/node", `{"agent_id":"` + a + `","ip":"192.168.10.12","level":"c","local":1,"name":"pve2","nodeid":2,"online":1,"pveversion":"pve-manager/8.3.0/c1689ccb1065a83b"}`},
			{"/api/proxmox/cluster", `{"name":"lab","nodes":3,"quorate":1,"version":7,"px_cluster_id":"cluster"}`},
			{"/api/proxmox/lxc", `{"agent_id":"` + a + `","node_id":"","name":"web","lxc_id":"lxc/101","status":"running","ostype":"ubuntu","uptime":86400,"vmid":101,"node":"pve2"}`},
			{"/api/proxmox/lxc", `{"agent_id":"` + a + `","node_id":"","name":"db","lxc_id":"lxc/102","status":"running","ostype":"debian","uptime":3600,"vmid":102,"node":"pve2"}`},
			{"/api/proxmox/lxc", `{"agent_id":"` + a + `","node_id":"","name":"dns","lxc_id":"lxc/103","status":"stopped","ostype":"alpine","uptime":0,"vmid":103,"node":"pve2"}`},
			{"/api/proxmox/lxc", `{"agent_id":"` + a + `","node_id":"","name":"build","lxc_id":"lxc/104","status":"stopped","ostype":"debian","uptime":0,"vmid":104,"node":"pve2"}`},
			{"/api/proxmox/qemu", `{"agent_id":"` + a + `","node_id":"","name":"win-dc","qemu_id":"qemu/200","status":"running","ostype":"win11","uptime":172800,"vmid":200,"vmgenid":"3f0c1c8e-6b1a-4d0e-9c55-2c7a9e1d4b10","boot":"order=scsi0;ide2;net0","cpu":"x86-64-v2-AES","node":"pve2"}`},
			{"/api/proxmox/qemu", `{"agent_id":"` + a + `","node_id":"","name":"legacy","qemu_id":"qemu/201","status":"stopped","ostype":"l26","uptime":0,"vmid":201,"kvm":1,"boot":"cdn","cpu":"kvm64","node":"pve2"}`},
			// kvm: 0 is dropped by the backend's omitempty tag.
			{"/api/proxmox/qemu", `{"agent_id":"` + a + `","node_id":"","name":"minimal","qemu_id":"qemu/202","status":"running","ostype":"other","uptime":600,"vmid":202,"node":"pve2"}`},
			{"/api/proxmox/qemu", `{"agent_id":"` + a + `","node_id":"","name":"tpl-debian12","qemu_id":"qemu/9000","status":"stopped","ostype":"l26","uptime":0,"vmid":9000,"vmgenid":"c0ffee00-1234-4abc-8def-0123456789ab","boot":"order=scsi0","cpu":"host","node":"pve2"}`},
		}
	case Standalone:
		return []Payload{
			{"/api/proxmox/node", `{"agent_id":"` + a + `","ip":"192.168.1.50","level":"","local":1,"name":"pve","nodeid":0,"online":1,"pveversion":"pve-manager/8.1.10/4b06efb5db453f29"}`},
			{"/api/proxmox/lxc", `{"agent_id":"` + a + `","node_id":"","name":"pihole","lxc_id":"lxc/100","status":"running","ostype":"debian","uptime":5400,"vmid":100,"node":"pve"}`},
			{"/api/proxmox/qemu", `{"agent_id":"` + a + `","node_id":"","name":"homeassistant","qemu_id":"qemu/150","status":"running","ostype":"l26","uptime":432000,"vmid":150,"vmgenid":"5f4dcc3b-5aa7-4651-8ddd-7a3f3e1b2c4d","kvm":1,"boot":"order=scsi0","cpu":"host","node":"pve"}`},
		}
	}
	return nil
}
