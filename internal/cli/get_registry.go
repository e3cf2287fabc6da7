package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/adminapi"
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
	var rows [][]string
	var header []string
	switch kind {
	case "workloads":
		list, err := c.ListProxies(cmdCtx, ns)
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		items = list
		header = []string{"NAMESPACE", "SERVICE", "INSTANCE", "ADDRESS", "STATE", "DESIRED", "ACKED", "AGE"}
		for _, p := range list {
			state := p.State
			if p.Error != "" {
				state += ": " + p.Error
			}
			rows = append(rows, []string{p.Namespace, p.Service, p.Instance, orNone(p.AdvertiseAddr), state, versionOf(p.Desired), versionOf(p.Acked), age(&p.ConnectedAt)})
		}
	default:
		list, err := c.ListServices(cmdCtx, ns)
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		items = list
		header = []string{"NAMESPACE", "NAME", "PROTOCOL", "VIRTUAL-IP", "ENDPOINTS", "INSTANCES", "CONNECTED"}
		for _, s := range list {
			rows = append(rows, []string{s.Namespace, s.Name, s.Protocol, orNone(s.VirtualIP), strconv.Itoa(s.Endpoints), strconv.Itoa(s.Instances), strconv.Itoa(s.Connected)})
		}
	}
	switch output {
	case "json":
		data, err := json.MarshalIndent(map[string]any{"items": items}, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", data)
		return err
	case "yaml":
		data, err := yaml.Marshal(map[string]any{"items": items})
		if err != nil {
			return err
		}
		_, err = out.Write(data)
		return err
	}
	if len(rows) == 0 {
		fmt.Fprintf(out, "No %s found.\n", kind)
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func versionOf(v *adminapi.ConfigVersion) string {
	if v == nil || v.Version == "" {
		return "-"
	}
	return v.Version
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
