package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
	"github.com/nannyagent/nannyagent/internal/catalog/runner"
	"github.com/spf13/cobra"
)

// maxRequestBytes bounds what `trace resolve` reads.
const maxRequestBytes = 1 << 20

func (a *app) traceResolveCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "resolve [REQUESTS-JSON | -]",
		Short: "Show how trace requests map to catalog entries, without running them",
		Long: `resolve reads trace requests as a reasoning engine writes them
({name, type, target, duration, filters, description}; one object, an
array, or a reply object with "ebpf_programs") from the argument or from
standard input ("-" or no argument), and prints what each maps to and how:
an entry with its parameters, the bpftrace fallback, or a refusal with the
reason.`,
		Example: `  nannyagent trace resolve '{"name":"io","type":"tracepoint","target":"block:block_rq_complete","duration":5}'
  echo '[{"target":"execsnoop"},{"type":"kprobe","target":"tcp_v4_connect"}]' | nannyagent trace resolve`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var data []byte
			var err error
			if len(args) == 0 || args[0] == "-" {
				data, err = io.ReadAll(io.LimitReader(os.Stdin, maxRequestBytes+1))
				if err != nil {
					return err
				}
			} else {
				data = []byte(args[0])
			}
			if len(data) > maxRequestBytes {
				return &exitError{code: 2, err: fmt.Errorf("requests are larger than %d bytes", maxRequestBytes)}
			}
			reqs, err := parseRequests(data)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			res := runner.NewResolver().ResolveAll(reqs)
			if asJSON {
				return writeJSON(a.stdout, res)
			}
			fmt.Fprint(a.stdout, resolver.Report(res))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// parseRequests accepts one request, an array of them, or an object with
// an "ebpf_programs" array (a diagnostic reply).
func parseRequests(data []byte) ([]resolver.Request, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, fmt.Errorf("no requests given (pass JSON as the argument or on standard input)")
	}
	if data[0] == '[' {
		var reqs []resolver.Request
		if err := json.Unmarshal(data, &reqs); err != nil {
			return nil, fmt.Errorf("requests are not a JSON array of {name, type, target, duration, filters}: %v", err)
		}
		return reqs, nil
	}
	var reply struct {
		Programs []resolver.Request `json:"ebpf_programs"`
	}
	if err := json.Unmarshal(data, &reply); err == nil && reply.Programs != nil {
		return reply.Programs, nil
	}
	var req resolver.Request
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, fmt.Errorf("request is not JSON of the form {name, type, target, duration, filters}: %v", err)
	}
	return []resolver.Request{req}, nil
}
