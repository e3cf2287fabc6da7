package deploy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/promtest"
)

const prometheusPath = promtest.Path

// prometheusEvaluates runs a real Prometheus scraping targets (addresses
// by job) every second with the alerting rules loaded, and checks that
// every rule evaluates without error and that every query in qs runs.
func prometheusEvaluates(t *testing.T, targets map[string][]string, qs []query) {
	if _, err := os.Stat(prometheusPath); err != nil {
		if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
			t.Fatalf("missing %s (Debian package prometheus); run make deps as root", prometheusPath)
		}
		t.Skipf("missing %s; apt-get install prometheus (make deps) to run this test", prometheusPath)
	}
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	api := startPrometheus(t, rules, targets)

	// Every target scraped, and the collector's edge in.
	testutil.EventuallyWithin(t, 30*time.Second, "Prometheus to scrape every target and the frontend -> catalog edge", func() bool {
		up, _ := promQuery(api, "sum(up)")
		edge, _ := promQuery(api, `trellis_mesh_requests_total{destination_service="catalog"}`)
		n := 0
		for _, addrs := range targets {
			n += len(addrs)
		}
		return len(up) == 1 && up[0].value() == float64(n) && len(edge) > 0
	})
	// Two evaluations of every rule after that, none failing.
	start := time.Now()
	var groups []ruleGroup
	testutil.EventuallyWithin(t, 30*time.Second, "every rule to be evaluated twice after the first scrapes", func() bool {
		groups = promRules(t, api)
		for _, g := range groups {
			for _, r := range g.Rules {
				if r.LastEvaluation.Before(start.Add(time.Second)) {
					return false
				}
			}
		}
		return len(groups) > 0
	})
	n := 0
	for _, g := range groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				t.Errorf("rule %s (group %s): health %q: %s", r.Name, g.Name, r.Health, r.LastError)
			}
		}
	}
	if want := len(loadRules(t)); n != want {
		t.Errorf("Prometheus loaded %d rules, want %d", n, want)
	}
	for _, q := range qs {
		if _, err := promQuery(api, q.expr); err != nil {
			t.Errorf("%s: %v", q.where, err)
		}
	}
}

type promSample struct {
	Metric map[string]string
	Value  [2]any
}

func (s promSample) value() float64 {
	v, _ := s.Value[1].(string)
	var f float64
	fmt.Sscan(v, &f)
	return f
}

// promQuery runs an instant query, returning a vector's samples (none for
// other result types).
func promQuery(api, q string) ([]promSample, error) {
	resp, err := http.Get(api + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status, Error string
		Data          struct {
			ResultType string
			Result     json.RawMessage
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %s: %d: %v", q, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, body.Error)
	}
	var out []promSample
	if body.Data.ResultType == "vector" {
		if err := json.Unmarshal(body.Data.Result, &out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

type ruleGroup struct {
	Name  string
	Rules []struct {
		Name, Health, LastError string
		LastEvaluation          time.Time
	}
}

func promRules(t *testing.T, api string) []ruleGroup {
	t.Helper()
	resp, err := http.Get(api + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data struct{ Groups []ruleGroup }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Data.Groups
}

// startPrometheus runs Prometheus with the rules file and a job per entry
// of targets, scraping and evaluating every second, and returns its base
// URL once it is ready. It is stopped when the test ends; its output is
// shown if the test failed.
func startPrometheus(t *testing.T, rules string, targets map[string][]string) string {
	t.Helper()
	var conf strings.Builder
	fmt.Fprintf(&conf, "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: [%q]\nscrape_configs:\n", rules)
	jobs := make([]string, 0, len(targets))
	for job := range targets {
		jobs = append(jobs, job)
	}
	slices.Sort(jobs)
	for _, job := range jobs {
		b, _ := json.Marshal(targets[job])
		fmt.Fprintf(&conf, "- job_name: %s\n  static_configs:\n  - targets: %s\n", job, b)
	}
	return promtest.Start(t, conf.String())
}
