package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// A flag table in the docs is a markdown table whose first column names
// flags (`--service`, or `-f`, `--filename`), under a heading that names
// the command in backticks (`trellis proxy`, `trellis import istio`); the
// nearest such heading above the table, at its level or any outer one,
// is the table's command.

// flagTable is one flag table of one doc file.
type flagTable struct {
	file    string
	line    int // of the header row, from 1
	command []string
	flags   []docFlag
}

type docFlag struct {
	name string // "--service" or "-f"
	line int
	def  string // the default column's cell, if the table has one
}

var (
	headingRE = regexp.MustCompile(`^(#{1,6})\s+(.*)$`)
	// commandRE finds `trellis WORD...` in backticks; the words end at the
	// first one that is not a subcommand name (an argument, "|", a flag).
	commandRE  = regexp.MustCompile("`trellis((?: [a-z][a-z0-9-]*)+)")
	docFlagRE  = regexp.MustCompile("`(--?[a-zA-Z0-9][a-zA-Z0-9-]*)`")
	tableSepRE = regexp.MustCompile(`^\|(\s*:?-+:?\s*\|)+\s*$`)
)

// parseFlagTables finds the flag tables of one markdown file. A flag table
// under no heading naming a command is a problem, as is a first-column
// cell that names no flag.
func parseFlagTables(file, text string) ([]flagTable, []string) {
	var (
		tables   []flagTable
		problems []string
		headings [7][]string // the command each open heading level names, nil if none
	)
	lines := strings.Split(text, "\n")
	inCode := false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inCode = !inCode
			continue
		}
		if inCode {
			continue
		}
		if m := headingRE.FindStringSubmatch(l); m != nil {
			level := len(m[1])
			headings[level] = nil
			if c := commandRE.FindStringSubmatch(m[2]); c != nil {
				headings[level] = strings.Fields(c[1])
			}
			for j := level + 1; j < len(headings); j++ {
				headings[j] = nil
			}
			continue
		}
		if !strings.HasPrefix(l, "|") || i+1 >= len(lines) || !tableSepRE.MatchString(strings.TrimSpace(lines[i+1])) {
			continue
		}
		// A table: header row i, separator i+1, body rows after.
		header := i
		defCol := slices.IndexFunc(cells(lines[header]), func(c string) bool { return strings.EqualFold(c, "default") })
		var rows []docFlag
		var nonFlagRows []int
		for i += 2; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
			first := firstCell(lines[i])
			names := docFlagRE.FindAllStringSubmatch(first, -1)
			if len(names) == 0 || !strings.HasPrefix(strings.TrimSpace(first), "`-") {
				nonFlagRows = append(nonFlagRows, i+1)
				continue
			}
			def := ""
			if c := cells(lines[i]); defCol > 0 && defCol < len(c) {
				def = c[defCol]
			}
			for _, n := range names {
				rows = append(rows, docFlag{name: n[1], line: i + 1, def: def})
			}
		}
		i-- // the loop's i++ moves past the table
		isFlagTable := strings.EqualFold(strings.TrimSpace(firstCell(lines[header])), "flag") ||
			len(rows) > 0 && len(nonFlagRows) == 0
		if !isFlagTable {
			continue
		}
		for _, n := range nonFlagRows {
			problems = append(problems, fmt.Sprintf("%s:%d: a flag table row whose first cell names no flag (write `--flag`)", file, n))
		}
		var command []string
		for level := len(headings) - 1; level > 0; level-- {
			if headings[level] != nil {
				command = headings[level]
				break
			}
		}
		if command == nil {
			problems = append(problems, fmt.Sprintf("%s:%d: a flag table under no heading naming its command: name it in a heading above, such as \"## Flags of `trellis proxy`\"", file, header+1))
			continue
		}
		tables = append(tables, flagTable{file: file, line: header + 1, command: command, flags: rows})
	}
	return tables, problems
}

func firstCell(row string) string { return cells(row)[0] }

// cells splits a table row into its trimmed cells. An escaped \| stays
// in its cell.
func cells(row string) []string {
	row = strings.ReplaceAll(strings.Trim(strings.TrimSpace(row), "|"), `\|`, "\x00")
	out := strings.Split(row, "|")
	for i, c := range out {
		out[i] = strings.TrimSpace(strings.ReplaceAll(c, "\x00", "|"))
	}
	return out
}

// defaultRE is a default cell that is one literal value, which must then
// be the flag's default.
var defaultRE = regexp.MustCompile("^`([^`]*)`$")

// sameDefault reports whether the documented default doc is the flag's:
// equal text, or equal durations ("2m" and "2m0s").
func sameDefault(doc string, fl *pflag.Flag) bool {
	if doc == fl.DefValue {
		return true
	}
	if fl.Value.Type() == "duration" {
		a, errA := time.ParseDuration(doc)
		b, errB := time.ParseDuration(fl.DefValue)
		return errA == nil && errB == nil && a == b
	}
	return false
}

// checkFlagTables compares tables with root's commands, both ways: a
// documented flag must exist (as --help shows it, global flags included),
// and every non-hidden flag of a documented command must be in one of its
// tables.
func checkFlagTables(root *cobra.Command, tables []flagTable) []string {
	var problems []string
	byCommand := map[string][]flagTable{}
	var order []string
	for _, t := range tables {
		cmd, rest, err := root.Find(t.command)
		if err != nil || len(rest) > 0 || cmd == root {
			problems = append(problems, fmt.Sprintf("%s:%d: a flag table under a heading naming `trellis %s`, which is no command", t.file, t.line, strings.Join(t.command, " ")))
			continue
		}
		key := cmd.CommandPath()
		if _, ok := byCommand[key]; !ok {
			order = append(order, key)
		}
		byCommand[key] = append(byCommand[key], t)
		for _, f := range t.flags {
			fl := lookupFlag(cmd, f.name)
			if fl == nil {
				problems = append(problems, fmt.Sprintf("%s:%d: %s is in the flag table of %s, which has no such flag (see %s --help): remove the row or add the flag",
					t.file, f.line, f.name, key, key))
				continue
			}
			if m := defaultRE.FindStringSubmatch(f.def); m != nil && !sameDefault(m[1], fl) {
				problems = append(problems, fmt.Sprintf("%s:%d: %s of %s: the table's default is %s, the flag's is %q (see %s --help)",
					t.file, f.line, f.name, key, f.def, fl.DefValue, key))
			}
		}
	}
	for _, key := range order {
		ts := byCommand[key]
		cmd, _, _ := root.Find(ts[0].command)
		documented := map[string]bool{}
		var at []string
		for _, t := range ts {
			at = append(at, fmt.Sprintf("%s:%d", t.file, t.line))
			for _, f := range t.flags {
				if fl := lookupFlag(cmd, f.name); fl != nil {
					documented[fl.Name] = true
				}
			}
		}
		cmd.NonInheritedFlags().VisitAll(func(fl *pflag.Flag) {
			if fl.Hidden || fl.Name == "help" || documented[fl.Name] {
				return
			}
			problems = append(problems, fmt.Sprintf("%s: flag --%s of %s is missing from its flag table: add a row for it",
				strings.Join(at, ", "), fl.Name, key))
		})
	}
	return problems
}

// lookupFlag finds --name or -n among cmd's flags, inherited ones included.
func lookupFlag(cmd *cobra.Command, name string) *pflag.Flag {
	for _, fs := range []*pflag.FlagSet{cmd.Flags(), cmd.InheritedFlags()} {
		if long, ok := strings.CutPrefix(name, "--"); ok {
			if f := fs.Lookup(long); f != nil {
				return f
			}
		} else if f := fs.ShorthandLookup(strings.TrimPrefix(name, "-")); len(name) == 2 && f != nil {
			return f
		}
	}
	return nil
}

// TestDocsFlagTables: every flag table in docs/*.md matches its command's
// flags, both ways.
func TestDocsFlagTables(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no docs found: %v", err)
	}
	var (
		tables   []flagTable
		problems []string
	)
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tt, ps := parseFlagTables(filepath.ToSlash(filepath.Join("docs", filepath.Base(f))), string(text))
		tables, problems = append(tables, tt...), append(problems, ps...)
	}
	problems = append(problems, checkFlagTables(newRoot(strings.NewReader("")), tables)...)
	for _, p := range problems {
		t.Error(p)
	}
	// The test must see the tables it exists for.
	var got []string
	for _, tb := range tables {
		got = append(got, strings.Join(tb.command, " "))
	}
	for _, want := range []string{"proxy", "control", "collector", "iptables apply", "import istio"} {
		if !slices.Contains(got, want) {
			t.Errorf("no flag table for trellis %s found in docs/*.md (found: %q)", want, got)
		}
	}
}

// TestDocsFlagTablesReport checks the checker: a table with a flag the
// command lacks, a wrong default, a flag it has missing, a table under no
// command, and one under a command that does not exist.
func TestDocsFlagTablesReport(t *testing.T) {
	doc := "# Things (`trellis import istio -f FILE`)\n\n" +
		"## Flags\n\n" +
		"| flag | default | meaning |\n|---|---|---|\n" +
		"| `-f`, `--filename` | | |\n" +
		"| `--trust-domain` | | |\n" +
		"| `--istio-trust-domain` | `wrong.local` | |\n" +
		"| `--no-such-flag` | | |\n" +
		"| `--api` | | global flags may be documented |\n\n" +
		"## Other\n\n" +
		"| name | value |\n|---|---|\n| `x` | not a flag table |\n\n" +
		"# No command here\n\n" +
		"| flag | meaning |\n|---|---|\n| `--orphan` | |\n" +
		"```\n| flag |\n|---|\n| `--in-code` |\n```\n" +
		"# `trellis nope`\n\n| flag | meaning |\n|---|---|\n| `--x` | |\n"
	tables, problems := parseFlagTables("docs/x.md", doc)
	problems = append(problems, checkFlagTables(newRoot(strings.NewReader("")), tables)...)
	want := []string{
		"docs/x.md:21: a flag table under no heading naming its command: name it in a heading above, such as \"## Flags of `trellis proxy`\"",
		"docs/x.md:9: --istio-trust-domain of trellis import istio: the table's default is `wrong.local`, the flag's is \"cluster.local\" (see trellis import istio --help)",
		"docs/x.md:10: --no-such-flag is in the flag table of trellis import istio, which has no such flag (see trellis import istio --help): remove the row or add the flag",
		"docs/x.md:31: a flag table under a heading naming `trellis nope`, which is no command",
		"docs/x.md:5: flag --root-namespace of trellis import istio is missing from its flag table: add a row for it",
	}
	if !slices.Equal(problems, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n"))
	}
}
