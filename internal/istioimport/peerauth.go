package istioimport

import (
	"fmt"
	"maps"
	"slices"

	"github.com/trellismesh/trellis/internal/resource"
)

const leftOutSetting = "the setting is left out"

// meshPeerAuthentication converts a mesh-wide PeerAuthentication into the
// Mesh, if it is the one that sets the mesh's mode.
func (c *converter) meshPeerAuthentication(d *document) {
	if c.meshFrom != nil && c.meshFrom != d {
		c.dropResource(d, "", fmt.Sprintf("%s already sets the mesh-wide mode (Istio too uses only the oldest mesh-wide PeerAuthentication)", c.meshFrom.ref()))
		return
	}
	mode, ps := peerMode("spec.mtls", d.spec["mtls"])
	if mode == "DISABLE" {
		ps = append(ps, problem{field: "spec.mtls.mode", reason: disableReason})
	}
	for _, key := range slices.Sorted(maps.Keys(d.spec)) {
		f := "spec." + key
		switch key {
		case "mtls":
		case "selector":
			_, sps := selectorLabels(f, d.spec[key])
			ps = append(ps, sps...)
		case "portLevelMtls":
			ps = append(ps, problem{field: f, reason: "Trellis has no per-port mTLS mode"})
		default:
			ps = append(ps, problem{field: f, reason: "unknown field"})
		}
	}
	if c.meshFrom != d {
		// The mode did not convert: nothing is left.
		c.drop(d, ps, "the resource is left out")
		return
	}
	c.drop(d, ps, leftOutSetting)
	c.emit(d, resource.Object{
		APIVersion: resource.APIVersion,
		Kind:       resource.KindMesh,
		Metadata:   resource.Metadata{Name: "default"},
		Spec:       marshal(map[string]any{"mtls": map[string]string{"mode": c.meshMode}}),
	})
}

const disableReason = "DISABLE turns mutual TLS off, and Trellis proxies always use it between themselves (PERMISSIVE also accepts plain text from callers outside the mesh)"

// peerAuthentication checks a PeerAuthentication of one namespace or
// workload. Trellis sets the mTLS mode for the whole mesh, so it converts
// to nothing: what it sets is lost unless the mesh-wide mode is the same.
func (c *converter) peerAuthentication(d *document) {
	mode, ps := peerMode("spec.mtls", d.spec["mtls"])
	if c.loses(mode) {
		ps = append(ps, problem{field: "spec.mtls.mode", reason: c.scopedModeReason(mode, "per namespace or workload")})
	}
	for _, key := range slices.Sorted(maps.Keys(d.spec)) {
		f := "spec." + key
		switch key {
		case "mtls":
		case "selector":
			_, sps := selectorLabels(f, d.spec[key])
			ps = append(ps, sps...)
		case "portLevelMtls":
			ports, ok := d.spec[key].(map[string]any)
			if !ok {
				ps = append(ps, problem{field: f, reason: "not a mapping"})
				continue
			}
			for _, port := range slices.Sorted(maps.Keys(ports)) {
				fp := f + "[" + port + "]"
				pm, pps := peerMode(fp, ports[port])
				ps = append(ps, pps...)
				if c.loses(pm) {
					ps = append(ps, problem{field: fp + ".mode", reason: c.scopedModeReason(pm, "per port")})
				}
			}
		default:
			ps = append(ps, problem{field: f, reason: "unknown field"})
		}
	}
	c.drop(d, ps, leftOutSetting)
}

// loses reports whether a namespace, workload or port setting mode is
// lost in a mesh-wide Trellis mode: it is set and differs from the mesh's.
func (c *converter) loses(mode string) bool {
	switch mode {
	case "", "UNSET":
		return false
	case "DISABLE":
		return true
	}
	return meshMode(mode) != c.meshMode
}

func (c *converter) scopedModeReason(mode, scope string) string {
	reason := fmt.Sprintf("%s: Trellis sets the mTLS mode for the whole mesh (Mesh spec.mtls.mode), not %s", mode, scope)
	if mode == "DISABLE" {
		reason += "; and " + disableReason
	}
	if c.meshFrom == nil {
		return reason + "; no mesh-wide PeerAuthentication was converted"
	}
	return reason + fmt.Sprintf("; the mesh-wide mode is %s, from %s", c.meshMode, c.meshFrom.ref())
}

// peerMode reads an Istio mTLS setting, {mode: MODE}: the mode, "UNSET"
// when none is given, or "" when the setting does not parse.
func peerMode(f string, v any) (string, []problem) {
	if v == nil {
		return "UNSET", nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return "", []problem{{field: f, reason: "not a mapping"}}
	}
	var ps []problem
	for _, key := range slices.Sorted(maps.Keys(m)) {
		if key != "mode" {
			ps = append(ps, problem{field: f + "." + key, reason: "unknown field"})
		}
	}
	switch mode := m["mode"]; mode {
	case nil:
		return "UNSET", ps
	case "UNSET", "STRICT", "PERMISSIVE", "DISABLE":
		return mode.(string), ps
	default:
		return "", append(ps, problem{field: f + ".mode", reason: fmt.Sprintf("unknown mode %v: want STRICT, PERMISSIVE, DISABLE or UNSET", mode)})
	}
}

// meshMode is the Trellis mode of an Istio mode, other than DISABLE.
// UNSET means inherit; with nothing to inherit from, Istio treats it as
// PERMISSIVE.
func meshMode(istioMode string) string {
	if istioMode == "STRICT" {
		return resource.MTLSStrict
	}
	return resource.MTLSPermissive
}
