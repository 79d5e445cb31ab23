// Package cli is the nannyagent command line.
package cli

import (
	"fmt"
	"os"
)

// Main runs the command line and returns the exit code.
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, "nannyagent: commands are not wired yet")
	return 2
}
