package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/demo"
	"github.com/trellismesh/trellis/internal/testutil"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write the console's screenshots to docs/console/ (TestConsoleScreenshotsForDocs)")

// chromiumPath is Debian's Chromium, or the test is skipped (failed when
// TRELLIS_REQUIRE_ALL is set: make test must run everything).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
		t.Fatalf("missing chromium (Debian package chromium); run make deps as root")
	}
	t.Skipf("missing chromium; apt-get install chromium (make deps) to run the console's browser tests")
	return ""
}

// artifactsDir is where failing browser tests leave screenshots:
// $TRELLIS_ARTIFACTS, else trellis-artifacts under the temp dir.
func artifactsDir() string {
	if d := os.Getenv("TRELLIS_ARTIFACTS"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "trellis-artifacts")
}

// startBrowser runs headless Chromium for the test; when the test fails
// its last page is saved as a screenshot artefact.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancelA)
	t.Cleanup(cancelC)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		buf, err := chromedp.Run(sctx, chromedp.FullScreenshot(90))
		if err != nil {
			// A page in the middle of loading has no size yet: the
			// viewport then.
			time.Sleep(500 * time.Millisecond)
			buf, err = chromedp.Run(sctx, chromedp.CaptureScreenshot())
		}
		if err != nil {
			t.Logf("failure screenshot: %v", err)
			return
		}
		dir := artifactsDir()
		name := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".jpg")
		if err := os.MkdirAll(dir, 0o755); err == nil {
			if err := os.WriteFile(name, buf, 0o644); err == nil {
				t.Logf("failure screenshot: %s", name)
			}
		}
	})
	return ctx
}

// browse runs steps in the browser within 30 s, failing the test on
// error.
func browse(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(rctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// read runs a within 30 s and returns its value, failing the test on
// error.
func read[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(rctx, a)
	if err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// startDemo starts the demo mesh (frontend, catalog, its canary
// catalog-v2, payments and the gateway) with fast traffic.
func startDemo(t *testing.T) *demo.Mesh {
	t.Helper()
	clearEnv(t)
	var m *demo.Mesh
	var err error
	for range 5 {
		m, err = demo.Start(context.Background(), demo.Options{BasePort: 20000 + rand.IntN(400)*100, TrafficInterval: 50 * time.Millisecond, Logger: testutil.Logger(t)})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("start demo: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		m.Stop(ctx)
	})
	return m
}

// login logs the browser in to the demo's console with token and waits
// for the graph page.
func consoleLogin(t *testing.T, ctx context.Context, m *demo.Mesh, token string) {
	t.Helper()
	browse(t, ctx, "log in",
		chromedp.Navigate(m.ConsoleURL),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Submit(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.CSS("main h1")),
	)
	title := read(t, ctx, "read the page title", chromedp.Title())
	if !strings.Contains(title, "graph") {
		t.Fatalf("after login the page is %q, want the graph", title)
	}
}

// graphState is what the graph page shows: the services and each edge's
// outcome.
type graphState struct {
	Services []string          `json:"services"`
	Edges    map[string]string `json:"edges"`
}

const readGraph = `(() => ({
  services: Array.from(document.querySelectorAll('g.node')).map(n => n.dataset.service).sort(),
  edges: Object.fromEntries(Array.from(document.querySelectorAll('a.edge')).map(e => [e.dataset.edge, e.dataset.outcome])),
}))()`

// awaitGraph polls the live graph page until ok holds of it.
func awaitGraph(t *testing.T, ctx context.Context, within time.Duration, what string, ok func(graphState) bool) graphState {
	t.Helper()
	deadline := time.Now().Add(within)
	var g graphState
	for {
		g = read(t, ctx, "read the graph", chromedp.Evaluate[graphState](readGraph))
		if ok(g) {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("the graph page after %s: services %v, edges %v; want %s", within, g.Services, g.Edges, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// clickEdge clicks the middle of an edge's line with the mouse.
func clickEdge(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	sel := fmt.Sprintf(`a.edge[data-edge=%q] path.line`, id)
	browse(t, ctx, "scroll to edge "+id, chromedp.ScrollIntoView(chromedp.CSS(sel)))
	xy := read(t, ctx, "find edge "+id, chromedp.Evaluate[[]float64](fmt.Sprintf(`(() => { const p = document.querySelector(%q); const pt = p.getPointAtLength(p.getTotalLength()/2);
  const m = p.getScreenCTM(); return [pt.x*m.a + pt.y*m.c + m.e, pt.x*m.b + pt.y*m.d + m.f]; })()`, sel)))
	browse(t, ctx, "click edge "+id,
		chromedp.MouseClickXY(xy[0], xy[1]),
		chromedp.WaitVisible(chromedp.ID("edge-allowed-by")),
	)
}

// awaitLocation waits until the page's URL contains part.
func awaitLocation(t *testing.T, ctx context.Context, part string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		loc, err := chromedp.Run(rctx, chromedp.Location())
		cancel()
		if err == nil && strings.Contains(loc, part) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page is at %s (%v), want a URL with %s", loc, err, part)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type checkJSON struct {
	Decision string `json:"decision"`
	Policy   string `json:"policy"`
}

// policyCheck runs trellis policy check -o json against the demo.
func policyCheck(t *testing.T, api []string, args ...string) checkJSON {
	t.Helper()
	r := run(t, "", append(append(api, "policy", "check", "-o", "json"), args...)...)
	if r.code != cli.ExitOK {
		t.Fatalf("policy check %v: %v", args, r)
	}
	var out checkJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("policy check output: %v\n%s", err, r.stdout)
	}
	return out
}

// whatIf fills the policies page's what-if form and reads its answer.
func whatIf(t *testing.T, ctx context.Context, m *demo.Mesh, from, to, method, path string) checkJSON {
	t.Helper()
	browse(t, ctx, "what-if "+from+" -> "+to,
		chromedp.Navigate(m.ConsoleURL+"policies"),
		chromedp.WaitVisible(chromedp.ID("from")),
		chromedp.SetValue(chromedp.ID("from"), from),
		chromedp.SetValue(chromedp.ID("to"), to),
		chromedp.SetValue(chromedp.ID("method"), method),
		chromedp.SetValue(chromedp.ID("path"), path),
		chromedp.Click(chromedp.ID("check")),
		chromedp.WaitVisible(chromedp.ID("check-decision")),
	)
	return read(t, ctx, "read the what-if answer", chromedp.Evaluate[checkJSON](`({
  decision: document.getElementById('check-decision').textContent.trim(),
  policy: (document.getElementById('check-policy') || {textContent: ''}).textContent.trim(),
})`))
}

const (
	catalogEdge = "frontend.shop->catalog.shop"
	denyCatalog = `apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-frontend-catalog, namespace: shop}
spec:
  selector: {service: catalog}
  action: DENY
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
`
)

// demoServices are the demo's services the graph must show (the
// gateway's caller may add one more).
var demoServices = []string{"catalog-v2.shop", "catalog.shop", "frontend.shop", "payments.shop"}

func hasDemoGraph(g graphState) bool {
	for _, s := range demoServices {
		if !slices.Contains(g.Services, s) {
			return false
		}
	}
	for _, e := range []string{catalogEdge, "frontend.shop->catalog-v2.shop", "frontend.shop->payments.shop"} {
		if g.Edges[e] != "allowed" {
			return false
		}
	}
	return true
}

// In a real browser: log in, see the demo's services and edges, click an
// edge and see the policy that allows it, apply a DENY with the CLI and
// see the edge turn red within 5 s, and get policy check's answers from
// the what-if form.
func TestConsoleInBrowser(t *testing.T) {
	chromiumPath(t)
	m := startDemo(t)
	ctx := startBrowser(t)
	api := []string{"--api", m.Control.APIURL(), "--token-file", filepath.Join(m.DataDir, controlplane.AdminTokenFile)}
	root, err := os.ReadFile(filepath.Join(m.DataDir, controlplane.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	consoleLogin(t, ctx, m, strings.TrimSpace(string(root)))

	g := awaitGraph(t, ctx, 30*time.Second, "the demo's services with allowed edges frontend -> catalog, catalog-v2 and payments", hasDemoGraph)
	// The graph shows what the admin API's graph has.
	top := run(t, "", append(api, "top", "-o", "json")...)
	if top.code != cli.ExitOK {
		t.Fatalf("top -o json: %v", top)
	}
	for _, s := range g.Services {
		svc, _, _ := strings.Cut(s, ".")
		if !strings.Contains(top.stdout, `"`+svc+`"`) {
			t.Errorf("the console shows service %s that trellis top does not:\n%s", s, top.stdout)
		}
	}

	want := policyCheck(t, api, "--from", "frontend.shop", "--to", "catalog.shop", "--method", "GET", "--path", "/items")
	if want.Decision != "ALLOW" || want.Policy == "" {
		t.Fatalf("policy check frontend -> catalog: %+v, want ALLOW by a policy", want)
	}
	clickEdge(t, ctx, catalogEdge)
	allowedBy := read(t, ctx, "read the edge's details", chromedp.Text(chromedp.ID("edge-allowed-by")))
	loc := read(t, ctx, "read the location", chromedp.Location())
	if !strings.Contains(allowedBy, want.Policy) {
		t.Errorf("edge details: allowed by %q, want %s (as policy check says)", allowedBy, want.Policy)
	}
	if !strings.Contains(loc, "edge=") {
		t.Errorf("after clicking the edge the page is %s", loc)
	}

	// From the keyboard: Tab to an edge (it is a link) and press Enter.
	const paysEdge = "frontend.shop->payments.shop"
	browse(t, ctx, "select an edge from the keyboard",
		chromedp.Focus(chromedp.CSS(fmt.Sprintf(`a.edge[data-edge=%q]`, paysEdge))),
		chromedp.KeyEvent("\r"),
	)
	awaitLocation(t, ctx, "payments.shop") // the edge= parameter, with > escaped
	browse(t, ctx, "wait for the edge's details", chromedp.WaitVisible(chromedp.ID("edge-allowed-by")))
	if by := read(t, ctx, "read the edge's details", chromedp.Text(chromedp.ID("edge-allowed-by"))); !strings.Contains(by, "shop/frontend-pays") {
		t.Errorf("frontend -> payments selected from the keyboard: allowed by %q, want shop/frontend-pays", by)
	}
	// The theme toggle switches to the other theme and back.
	theme := `getComputedStyle(document.body).backgroundColor`
	before := read(t, ctx, "read the background", chromedp.Evaluate[string](theme))
	browse(t, ctx, "toggle the theme", chromedp.Click(chromedp.ID("theme")))
	if after := read(t, ctx, "read the background", chromedp.Evaluate[string](theme)); after == before {
		t.Errorf("the theme toggle left the background %s", after)
	}
	browse(t, ctx, "toggle the theme back", chromedp.Click(chromedp.ID("theme")))

	// DENY with the CLI: the edge turns red within 5 s.
	if r := run(t, denyCatalog, append(api, "apply", "-f", "-")...); r.code != cli.ExitOK {
		t.Fatalf("apply deny: %v", r)
	}
	applied := time.Now()
	awaitGraph(t, ctx, 5*time.Second, catalogEdge+" denied", func(g graphState) bool { return g.Edges[catalogEdge] == "denied" })
	t.Logf("the edge turned denied %s after the apply", time.Since(applied).Round(10*time.Millisecond))
	red := read(t, ctx, "read the edge's colour", chromedp.Evaluate[bool](fmt.Sprintf(`getComputedStyle(document.querySelector('a.edge[data-edge=%q] path.line')).stroke ===
  getComputedStyle(document.querySelector('.legend .key.denied')).color`, catalogEdge)))
	if !red {
		t.Errorf("the denied edge is not drawn in the denied colour")
	}

	// The what-if form answers as policy check does.
	defer func() {
		if t.Failed() {
			return
		}
		// "Apply in audit mode" applies the suggested Intent with
		// enforcement: audit, as policy suggest -o yaml | apply would.
		const sel = `[data-intent="shop/frontend"] button`
		browse(t, ctx, "apply the suggestion",
			chromedp.Navigate(m.ConsoleURL+"anomalies"),
			chromedp.WaitVisible(chromedp.CSS(sel)),
			chromedp.Click(chromedp.CSS(sel)),
			chromedp.WaitVisible(chromedp.CSS(`p.ok[role="status"]`)),
		)
		r := run(t, "", append(api, "get", "intent", "frontend", "-n", "shop", "-o", "json")...)
		if r.code != cli.ExitOK || !strings.Contains(r.stdout, `"enforcement": "audit"`) && !strings.Contains(r.stdout, `"enforcement":"audit"`) {
			t.Errorf("after apply in audit mode, get intent: %v", r)
		}
	}()
	for _, in := range [][4]string{
		{"frontend.shop", "catalog.shop", "GET", "/items"},
		{"frontend.shop", "payments.shop", "POST", "/charge"},
		{"frontend.shop", "payments.shop", "GET", "/charge"},
		{"payments.shop", "catalog-v2.shop", "GET", "/items"},
	} {
		cli := policyCheck(t, api, "--from", in[0], "--to", in[1], "--method", in[2], "--path", in[3])
		got := whatIf(t, ctx, m, in[0], in[1], in[2], in[3])
		if got != cli {
			t.Errorf("what-if %v: the console says %+v, policy check %+v", in, got, cli)
		}
	}
}

// screenshotPages are the console's pages in docs/console.md.
var screenshotPages = []struct{ name, path string }{
	{"graph", "graph?edge=" + catalogEdge},
	{"policies", "policies/check?from=frontend.shop&to=catalog.shop&method=GET&path=%2Fitems"},
	{"proxies", "proxies"},
	{"certificates", "certificates"},
	{"audit", "audit"},
	{"anomalies", "anomalies"},
}

// The screenshots in docs/console.md come from this test: with
// -update-screenshots it writes docs/console/*.png, otherwise it checks
// every page still renders to a picture and that docs has each one.
func TestConsoleScreenshotsForDocs(t *testing.T) {
	chromiumPath(t)
	m := startDemo(t)
	ctx := startBrowser(t)
	consoleLogin(t, ctx, m, m.ViewerToken)
	awaitGraph(t, ctx, 30*time.Second, "the demo's graph", hasDemoGraph)
	dir := filepath.Join("..", "..", "docs", "console")
	if !*updateScreenshots {
		dir = t.TempDir()
	}
	shoot := func(name, path string, dark bool) {
		scheme := "light"
		if dark {
			scheme = "dark"
		}
		browse(t, ctx, "open "+name,
			chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
				_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
					Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
				return err
			}),
			chromedp.Navigate(m.ConsoleURL+path),
			chromedp.WaitVisible(chromedp.CSS("main h1")),
			chromedp.Sleep(300*time.Millisecond),
		)
		buf := read(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
		img, err := png.Decode(bytes.NewReader(buf))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 300 {
			t.Errorf("screenshot %s is %v", name, b)
		}
		if msg := read(t, ctx, "read "+name, chromedp.Evaluate[string](`(document.querySelector('#error-message, .error') || {textContent: ''}).textContent`)); msg != "" {
			t.Errorf("page %s shows an error: %s", name, msg)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for learned traffic so the suggestions and coverage show.
	time.Sleep(2 * time.Second)
	for _, p := range screenshotPages {
		shoot(p.name, p.path, false)
	}
	shoot("graph-dark", screenshotPages[0].path, true)
	// One proxy's page, reached from the proxies table.
	browse(t, ctx, "open the proxies", chromedp.Navigate(m.ConsoleURL+"proxies"), chromedp.WaitVisible(chromedp.CSS("tbody tr")))
	href := read(t, ctx, "find frontend's proxy", chromedp.Evaluate[string](`Array.from(document.querySelectorAll('tbody tr'))
  .find(r => r.querySelector('th').textContent.startsWith('frontend.')).querySelector('a').getAttribute('href')`))
	shoot("proxy", strings.TrimPrefix(href, "/ui/"), false)
	if !*updateScreenshots {
		doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "console.md"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range append(slices.Clone(screenshotPages), struct{ name, path string }{"graph-dark", ""}, struct{ name, path string }{"proxy", ""}) {
			ref := "console/" + p.name + ".png"
			if !strings.Contains(string(doc), ref) {
				t.Errorf("docs/console.md does not show %s", ref)
			}
			if _, err := os.Stat(filepath.Join("..", "..", "docs", ref)); err != nil {
				t.Errorf("docs/%s: %v (run go test ./internal/cli -run TestConsoleScreenshotsForDocs -update-screenshots)", ref, err)
			}
		}
	}
}
