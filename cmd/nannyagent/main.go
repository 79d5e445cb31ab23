// Command nannyagent is a Linux diagnostic agent built on a catalog of
// compiled eBPF programs.
package main

import (
	"os"

	"github.com/nannyagent/nannyagent/internal/cli"
	"github.com/nannyagent/nannyagent/internal/safeexec"
)

func main() {
	// Commands run in a sandbox the agent sets up by re-executing itself;
	// in that case this never returns.
	safeexec.EnterSandboxIfRequested()
	os.Exit(cli.Main(os.Args[1:]))
}
