package main

import (
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/dtx-dev/dtx/tracing"
)

// traceFlags are the tracing flags of dtx serve and dtx run.
type traceFlags struct {
	exporter, endpoint string
	sample             float64
	insecure           bool
}

func (t *traceFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&t.exporter, "trace", "off", "export OpenTelemetry spans of every transaction: "+strings.Join(tracing.Exporters, ", ")+" (discard: make spans, export nowhere; docs/TRACING.md)")
	fl.StringVar(&t.endpoint, "trace-endpoint", "", "otlp-grpc: collector host:port (default localhost:4317); otlp-http: host:port (default localhost:4318); stdout: a file to append to instead of standard output")
	fl.Float64Var(&t.sample, "trace-sample", 1, "fraction of transactions traced when the caller sends no trace context (a caller's traceparent is followed), e.g. 0.01")
	fl.BoolVar(&t.insecure, "trace-insecure", false, "send OTLP without TLS")
}

// config checks the flags; the error names the bad one.
func (t *traceFlags) config() (tracing.Config, error) {
	c := tracing.Config{Exporter: t.exporter, Endpoint: t.endpoint, Sample: t.sample, Insecure: t.insecure}
	if err := c.Validate(); err != nil {
		return c, usagef("--trace/--trace-sample: %v", err)
	}
	if c.Sample == 0 && c.On() {
		return c, usagef("--trace-sample 0 traces nothing: use --trace off")
	}
	return c, nil
}

// serveArgs returns the flags that give a `dtx serve` process these
// tracing settings (none when tracing is off). With the stdout exporter
// and no endpoint, the process's spans go to stdoutFile: its standard
// output is its log.
func (t *traceFlags) serveArgs(stdoutFile string) []string {
	if t.exporter == "" || t.exporter == "off" {
		return nil
	}
	args := []string{"--trace", t.exporter, "--trace-sample", strconv.FormatFloat(t.sample, 'g', -1, 64)}
	switch {
	case t.endpoint != "":
		args = append(args, "--trace-endpoint", t.endpoint)
	case t.exporter == "stdout":
		args = append(args, "--trace-endpoint", stdoutFile)
	}
	if t.insecure {
		args = append(args, "--trace-insecure")
	}
	return args
}
