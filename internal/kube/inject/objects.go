package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// templatePaths is where each workload kind keeps its pod template; a Pod
// is its own template.
var templatePaths = map[string][]string{
	"Pod":         nil,
	"Deployment":  {"spec", "template"},
	"StatefulSet": {"spec", "template"},
	"DaemonSet":   {"spec", "template"},
	"ReplicaSet":  {"spec", "template"},
	"Job":         {"spec", "template"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template"},
}

// Documents injects every workload of a multi-document YAML stream (trellis
// inject -f), leaving other kinds as they are, and returns the stream with
// the documents in their order. source names the input in errors, which
// say which document and annotation are at fault; on an error nothing is
// returned.
func Documents(data []byte, source string, cfg Config) ([]byte, error) {
	var out bytes.Buffer
	for i, doc := range splitDocuments(data) {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj := map[string]any{}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return nil, fmt.Errorf("%s#%d: %v", source, i+1, err)
		}
		kind, _ := obj["kind"].(string)
		if path, ok := templatePaths[kind]; ok {
			if err := injectTemplate(obj, path, cfg); err != nil {
				name := ""
				if m, ok := obj["metadata"].(map[string]any); ok {
					name, _ = m["name"].(string)
				}
				return nil, fmt.Errorf("%s#%d: %s %s: %v", source, i+1, kind, name, err)
			}
		}
		b, err := yaml.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("%s#%d: %v", source, i+1, err)
		}
		if out.Len() > 0 {
			out.WriteString("---\n")
		}
		out.Write(b)
	}
	return out.Bytes(), nil
}

// injectTemplate injects the pod template at path in obj.
func injectTemplate(obj map[string]any, path []string, cfg Config) error {
	parent, key := obj, ""
	tmpl := obj
	for i, p := range path {
		next, ok := tmpl[p].(map[string]any)
		if !ok {
			return fmt.Errorf("no %s", strings.Join(path[:i+1], "."))
		}
		parent, key, tmpl = tmpl, p, next
	}
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return err
	}
	var pt corev1.PodTemplateSpec
	if err := json.Unmarshal(raw, &pt); err != nil {
		return fmt.Errorf("pod template: %v", err)
	}
	injected, err := Pod(&pt.ObjectMeta, &pt.Spec, cfg)
	if err != nil || !injected {
		return err
	}
	raw, err = json.Marshal(pt)
	if err != nil {
		return err
	}
	next := map[string]any{}
	if err := json.Unmarshal(raw, &next); err != nil {
		return err
	}
	// Marshaling a typed template adds empty fields the input did not
	// have; keep the output to what was written plus what was injected.
	if m, ok := next["metadata"].(map[string]any); ok {
		if ts, ok := m["creationTimestamp"]; ok && ts == nil {
			delete(m, "creationTimestamp")
		}
	}
	if key == "" { // a Pod: its apiVersion, kind and status stay
		obj["metadata"], obj["spec"] = next["metadata"], next["spec"]
		return nil
	}
	parent[key] = next
	return nil
}

// splitDocuments splits a YAML stream at "---" lines.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for line := range bytes.Lines(data) {
		if t := bytes.TrimRight(line, " \t\r\n"); bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '#' {
			continue
		}
		out = append(out, line...)
	}
	return out
}
