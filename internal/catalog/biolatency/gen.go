package biolatency

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type bio_disk_key -type bio_disk_stats -type bio_proc_key -type bio_proc_stats biolatency ../../../bpf/biolatency.bpf.c -- -I../../../headers -I../../../bpf
