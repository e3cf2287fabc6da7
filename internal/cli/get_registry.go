package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/adminview"
)

// registryKind names what proxies register, as opposed to what users apply:
// visible with `trellis get workloads|services`, never written by users.
func registryKind(name string) string {
	switch strings.ToLower(name) {
	case "workloads", "workload", "wl", "proxies", "proxy":
		return "workloads"
	case "services", "service", "svc":
		return "services"
	}
	return ""
}

func getRegistry(cmdCtx context.Context, g *globals, kind, namespace, output string, all bool, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	ns := namespace
	if all {
		ns = ""
	}
	var items any
	var table func() error
	switch kind {
	case "workloads":
		list, err := c.ListProxies(cmdCtx, ns)
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		items = list
		table = func() error { return adminview.WriteWorkloads(out, list, time.Now()) }
	default:
		list, err := c.ListServices(cmdCtx, ns)
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		items = list
		table = func() error { return adminview.WriteServices(out, list) }
	}
	switch output {
	case "json":
		return writeJSON(out, map[string]any{"items": items})
	case "yaml":
		data, err := yaml.Marshal(map[string]any{"items": items})
		if err != nil {
			return err
		}
		_, err = out.Write(data)
		return err
	}
	return table()
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
