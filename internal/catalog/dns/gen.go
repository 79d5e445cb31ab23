package dns

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type dns_event dns ../../../bpf/dns.bpf.c -- -I../../../headers -I../../../bpf
