package catalog

import (
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// On this kind of host (root, BTF, tracepoints) the probes must say yes for
// what the catalog relies on; a disabled feature must read as missing.
func TestProbeFeatures(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("NANNYAGENT_REQUIRE_BPF") == "1" {
			t.Fatal("NANNYAGENT_REQUIRE_BPF=1 but not root")
		}
		t.Skip("feature probes need root")
	}
	k := NewKernel(nil)
	k.Disable[FeatureRingBuf] = true
	f := k.Features()
	assert.NotEmpty(t, f.Release)
	for _, feat := range []Feature{FeatureRoot, FeatureBTF, FeaturePerfBuf, FeatureTracefs, FeatureTracepoint} {
		assert.Equal(t, Yes, f.Get(feat).State, "%s: %s", feat, f.Get(feat).Detail)
	}
	assert.Equal(t, No, f.Get(FeatureRingBuf).State)
	assert.Contains(t, f.Get(FeatureRingBuf).Detail, "disabled")
	for _, feat := range AllFeatures {
		assert.Contains(t, []State{Yes, No, Inconclusive}, f.Get(feat).State)
	}
	require.NoError(t, k.Has(Requirement{Feature: FeatureTracepoint, Name: "sched/sched_process_exec"}))
	assert.ErrorContains(t, k.Has(Requirement{Feature: FeatureTracepoint, Name: "nosuch/tracepoint"}), "does not exist")
	assert.ErrorContains(t, k.Has(Requirement{Feature: FeatureRingBuf}), "ring_buffer unavailable")
	assert.True(t, TracepointExists("sched:sched_switch"))
	assert.False(t, TracepointExists("../../etc"))
}

func TestDisableFromEnvironment(t *testing.T) {
	t.Setenv("NANNYAGENT_DISABLE_FEATURES", "tp_btf, ring_buffer")
	k := NewKernel(nil)
	assert.True(t, k.Disable[FeatureTpBTF])
	assert.True(t, k.Disable[FeatureRingBuf])
}

// bpf_task_pt_regs came with 5.15: from there on the probe must find it
// (older kernels may have it backported, so they are not held to No).
func TestProbeTaskPtRegs(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("NANNYAGENT_REQUIRE_BPF") == "1" {
			t.Fatal("NANNYAGENT_REQUIRE_BPF=1 but not root")
		}
		t.Skip("feature probes need root")
	}
	var major, minor int
	_, err := fmt.Sscanf(kernelRelease(), "%d.%d", &major, &minor)
	require.NoError(t, err, kernelRelease())
	st := NewKernel(nil).Feature(FeatureTaskPtRegs)
	if major > 5 || major == 5 && minor >= 15 {
		assert.Equal(t, Yes, st.State, "kernel %s: %s", kernelRelease(), st.Detail)
	} else {
		assert.Contains(t, []State{Yes, No}, st.State, "kernel %s: %s", kernelRelease(), st.Detail)
	}
	k := NewKernel(nil)
	k.Disable[FeatureTaskPtRegs] = true
	assert.False(t, k.Have(FeatureTaskPtRegs))
}
