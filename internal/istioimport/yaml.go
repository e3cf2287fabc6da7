package istioimport

import (
	"fmt"
	"io"

	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/resource"
)

// WriteYAML writes objs as YAML documents that trellis apply -f reads. A
// Mesh gets a comment: applying it replaces the whole live Mesh.
func WriteYAML(w io.Writer, objs []resource.Object) error {
	for i, o := range objs {
		data, err := yaml.Marshal(o)
		if err != nil {
			return fmt.Errorf("istioimport.WriteYAML: %w", err)
		}
		sep := ""
		if i > 0 {
			sep = "---\n"
		}
		if o.Kind == resource.KindMesh {
			sep += "# Applying a Mesh replaces the whole live one: settings it leaves out go back to\n" +
				"# their defaults. Merge it with trellis get mesh -o yaml first.\n"
		}
		if _, err := fmt.Fprintf(w, "%s%s", sep, data); err != nil {
			return fmt.Errorf("istioimport.WriteYAML: %w", err)
		}
	}
	return nil
}
