// Command nannyagent is a Linux diagnostic agent built on a catalog of
// compiled eBPF programs.
package main

import (
	"os"

	"github.com/nannyagent/nannyagent/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
