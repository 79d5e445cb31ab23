// Package bench holds the catalog's benchmarks, each run side by side with
// bpftrace in the same command so that the figures are ratios on a noisy
// machine (`make bench`, as root): start-to-attached, peak RSS, BPF time
// per event, and streaming throughput into Go.
package bench
