package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// flags is a FlagSet whose defaults fall back to SOCNET_* environment
// variables read through the injected getenv, so that every setting can come
// from a flag or from the environment (flags win).
type flags struct {
	*flag.FlagSet
	getenv func(string) string
}

func newFlags(name string, e *env) *flags {
	fs := flag.NewFlagSet("socnet "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return &flags{FlagSet: fs, getenv: e.getenv}
}

// envName is the variable a flag falls back to: --max-replica-lag -> SOCNET_MAX_REPLICA_LAG.
func envName(flagName string) string {
	return "SOCNET_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (f *flags) String(name, def, usage string) *string {
	if v := f.getenv(envName(name)); v != "" {
		def = v
	}
	return f.FlagSet.String(name, def, usage+" (env "+envName(name)+")")
}

func (f *flags) Duration(name string, def time.Duration, usage string) *time.Duration {
	if v, err := time.ParseDuration(f.getenv(envName(name))); err == nil {
		def = v
	}
	return f.FlagSet.Duration(name, def, usage+" (env "+envName(name)+")")
}

func (f *flags) Int(name string, def int, usage string) *int {
	if v, err := strconv.Atoi(f.getenv(envName(name))); err == nil {
		def = v
	}
	return f.FlagSet.Int(name, def, usage+" (env "+envName(name)+")")
}

func (f *flags) Float64(name string, def float64, usage string) *float64 {
	if v, err := strconv.ParseFloat(f.getenv(envName(name)), 64); err == nil {
		def = v
	}
	return f.FlagSet.Float64(name, def, usage+" (env "+envName(name)+")")
}

func (f *flags) Bool(name string, def bool, usage string) *bool {
	if v, err := strconv.ParseBool(f.getenv(envName(name))); err == nil {
		def = v
	}
	return f.FlagSet.Bool(name, def, usage+" (env "+envName(name)+")")
}

// HomeDir adds the --home flag: where `socnet up` keeps its state.
func (f *flags) HomeDir() *string {
	return f.String("home", defaultHome(f.getenv), "directory of the local stack's state")
}

// parse parses args; -h prints usage and returns errHelp so that run exits 0.
func (f *flags) parse(args []string) error {
	if err := f.FlagSet.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return errHelp
		}
		return usageError{err}
	}
	return nil
}

// errHelp is returned after a command printed its usage on request.
var errHelp = errors.New("help requested")

func defaultHome(getenv func(string) string) string {
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".socnet")
	}
	return ".socnet"
}

// isTerminal reports whether w is a terminal, for progress bars.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
