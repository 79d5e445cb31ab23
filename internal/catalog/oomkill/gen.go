package oomkill

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type oom_event oomkill ../../../bpf/oomkill.bpf.c -- -I../../../headers -I../../../bpf
