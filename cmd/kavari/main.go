// Command kavari inspects and repairs the topics of kavari services:
//
//	kavari tail TOPIC                  print records (a range, or follow new ones)
//	kavari dlq ls TOPIC.dlq            dead letters grouped by error
//	kavari dlq replay TOPIC.dlq        republish dead letters to their original topic
//	kavari contract diff OLD NEW       breaking changes between two contract documents
//
// Brokers come from --brokers or KAVARI_BROKERS; --tls* and --sasl-* flags
// configure security, --timeout bounds every broker operation and -o json
// selects JSON output. The exit status is 0 on success, 1 when the operation
// failed (or the contract diff found a breaking change) and 2 on a usage
// error. Run "kavari COMMAND --help" for a command's flags.
//
// Install it with
//
//	go install github.com/kavari-go/kavari/cmd/kavari@latest
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit statuses.
const (
	exitOK    = 0 // success; no breaking change
	exitFail  = 1 // the operation failed; a breaking change
	exitUsage = 2 // bad flags, arguments or input files
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `kavari inspects and repairs the topics of kavari services.

Usage:
  kavari tail TOPIC [flags]              print records: a range, or follow new ones
  kavari dlq ls TOPIC.dlq [flags]        count dead letters by error kind, handler, type and error
  kavari dlq replay TOPIC.dlq [flags]    republish dead letters to their original topic
  kavari contract diff OLD NEW [flags]   list changes between two contract documents

Brokers: --brokers host:port,... or KAVARI_BROKERS. Security: --tls, --tls-ca,
--tls-cert, --tls-key, --tls-insecure, --sasl-mechanism, --sasl-user,
--sasl-password (or KAVARI_SASL_PASSWORD). Output: -o table (default) or -o json.

Exit status: 0 ok, 1 operation failed or breaking change, 2 usage error.
Run "kavari COMMAND --help" for a command's flags.
`

// run executes the command line args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "tail":
		return runTail(ctx, args[1:], stdout, stderr)
	case "dlq":
		if len(args) > 1 {
			switch args[1] {
			case "ls":
				return runDLQList(ctx, args[2:], stdout, stderr)
			case "replay":
				return runReplay(ctx, args[2:], stdout, stderr)
			case "-h", "-help", "--help", "help":
				fmt.Fprint(stdout, dlqUsage)
				return exitOK
			}
		}
		fmt.Fprint(stderr, dlqUsage)
		return exitUsage
	case "contract":
		if len(args) > 1 {
			switch args[1] {
			case "diff":
				return runContractDiff(args[2:], stdout, stderr)
			case "-h", "-help", "--help", "help":
				fmt.Fprint(stdout, contractUsage)
				return exitOK
			}
		}
		fmt.Fprint(stderr, contractUsage)
		return exitUsage
	}
	fmt.Fprintf(stderr, "kavari: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

const dlqUsage = `Usage:
  kavari dlq ls TOPIC.dlq [flags]        count dead letters by error kind, handler, type and error
  kavari dlq replay TOPIC.dlq [flags]    republish dead letters to their original topic
`

const contractUsage = `Usage:
  kavari contract diff OLD NEW [flags]   list changes between two contract documents
`

// parseArgs parses args with fs, allowing flags after positional arguments
// ("kavari tail orders --last 5"), and returns the positional arguments.
// "--" ends the flags. The returned error is flag.ErrHelp for -h/--help.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stops at the first non-flag argument, or after "--".
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError is a problem with the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &usageError{fmt.Sprintf("kavari: "+format, a...)}
}

// exitCode reports err on stderr and returns its exit status.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintln(stderr, err)
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFail
}

// command is a subcommand's flag set with its usage text.
type command struct {
	*flag.FlagSet
	synopsis string // usage line, a blank line, a description
}

// newFlagSet returns a flag set that reports errors rather than exiting;
// parse prints its usage.
func newFlagSet(name, synopsis string) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &command{fs, synopsis}
}

func (c *command) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n\nFlags:\n", c.synopsis)
	c.SetOutput(w)
	c.PrintDefaults()
	c.SetOutput(io.Discard)
}

// parse parses args and checks that exactly n positional arguments remain.
// -h/--help prints the usage to stdout and returns flag.ErrHelp (exit 0);
// a bad flag or argument count is a usage error (exit 2).
func (c *command) parse(args []string, n int, stdout io.Writer) ([]string, error) {
	pos, err := parseArgs(c.FlagSet, args)
	if errors.Is(err, flag.ErrHelp) {
		c.printUsage(stdout)
		return nil, err
	}
	if err != nil {
		return nil, usagef("%s: %v (see kavari %s --help)", c.Name(), err, c.Name())
	}
	if len(pos) != n {
		return nil, usagef("%s: want %d argument(s), got %d; usage: %s (see kavari %s --help)",
			c.Name(), n, len(pos), strings.SplitN(c.synopsis, "\n", 2)[0], c.Name())
	}
	return pos, nil
}
