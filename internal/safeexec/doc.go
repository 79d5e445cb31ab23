// Package safeexec runs diagnostic command lines that a model proposes so
// that nothing they do can change the host.
//
// Three layers each hold on their own:
//
//  1. Validate parses the line with a real shell parser (mvdan.cc/sh/v3)
//     and accepts only simple commands joined by pipes and && || ;, with
//     quoting, globs that the agent expands itself, and redirections to
//     /dev/null or 2>&1. Every program must be on an allowlist with its own
//     argument rules; an unknown flag is refused unless the program's rule
//     says its flags are harmless. Anything else is a *Refusal naming the
//     rule, which goes back to the model as a result, not as an error.
//  2. Run executes the resulting Plan without a shell: pipes built in Go, a
//     timeout and output cap per command, the process group killed on
//     timeout, and a clean environment.
//  3. SandboxCommand re-executes the agent in a sandbox (read-only mounts,
//     Landlock, seccomp, a reduced capability bounding set) before it
//     execs the tool, so a tool that misbehaves still cannot write.
//
// Layer 1 is deliberately stricter than a shell: brace, tilde, variable and
// arithmetic expansion are refused rather than imitated, so what runs is
// exactly what the validator saw.
package safeexec
