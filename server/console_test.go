package server_test

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/twopc"
)

// chromium is the browser the console test drives (Debian's package).
const chromium = "/usr/bin/chromium"

// browser starts headless Chromium for a test, or skips the test when
// there is none (fails under CI, which installs it).
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required under CI: %v", chromium, err)
		}
		t.Skipf("no %s: the console is not tested in a browser", chromium)
	}
	// Flags for a machine without a network: without them Chromium waits
	// on update, sync and QUIC probes that never answer.
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	// The first call starts the browser, for the life of ctx: no timeout
	// on it; the test's actions get theirs.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	return ctx
}

// TestConsoleInBrowser loads the console in headless Chromium against a
// cluster under load: the page asks for the admin token, the throughput,
// latency and rollback cards fill; with a service stopped, purchases pile
// up in doubt and wait for each other's locks, and the in-doubt table and
// the wait-for graph show them; a transaction's timeline opens from its
// row; "retry now" asks for confirmation first. DTX_SCREENSHOTS=DIR saves
// the screenshots there (docs/ keeps them).
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a browser against a cluster under load")
	}
	ctx := browser(t)
	c := newCluster(t)
	c.protocol.PrepareTimeout = time.Minute // the purchases stay in doubt while the test looks
	tok, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	c.tokens = filepath.Join(c.dir, "http-tokens")
	if err := os.WriteFile(c.tokens, []byte("dtx://admin/console "+tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.web = &client.HTTP{Token: tok}
	c.start()

	// Load: workers buying a few hot items, until the test ends.
	cl := c.client()
	lctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	for w := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; lctx.Err() == nil; i++ {
				line := fmt.Sprintf(`{"transaction_id":"w%d-%d","user_id":"user-%d","item_id":"item-%d","quantity":1,"price":"1.00","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}`, w, i, w, i%4)
				sctx, cancel := context.WithTimeout(lctx, 2*time.Minute)
				cl.SubmitLine(sctx, line)
				cancel()
			}
		}()
	}

	shots := os.Getenv("DTX_SCREENSHOTS")
	// shot saves a PNG of the whole page, or of what the window shows.
	shot := func(name string, full bool) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if shots == "" {
				return nil
			}
			take := chromedp.CaptureScreenshot()
			if full {
				take = chromedp.FullScreenshot(100) // 100: PNG, not JPEG
			}
			b, err := take(ctx, tg)
			if err != nil {
				return err
			}
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				return err
			}
			var out bytes.Buffer
			if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&out, img); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name), out.Bytes(), 0o644)
		})
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(actx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	get := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		v, err := chromedp.Run(actx, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	text := func(sel string) string {
		t.Helper()
		return get("read "+sel, chromedp.Text(chromedp.CSS(sel)))
	}

	url := "http://" + c.http[twopc.CoordinatorID] + "/console/"
	run("load the page", chromedp.Navigate(url))
	run("the page asks for credentials", chromedp.WaitVisible(chromedp.CSS("#login-form")))
	run("give the token",
		chromedp.SendKeys(chromedp.CSS("#token"), tok),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)),
		chromedp.WaitNotVisible(chromedp.CSS("#login")),
	)
	// The cards fill from the live numbers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, _ := strconv.Atoi(strings.TrimSpace(text("#tps-commit")))
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rows, err := chromedp.Run(actx, chromedp.Evaluate[int](`document.querySelectorAll("#latency tbody tr").length`))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 && rows >= 2 && text("#conn") == "live" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the throughput and latency cards did not fill: %q committed/s, %d latency rows, %q", text("#tps-commit"), rows, text("#conn"))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A service stops: purchases pile up, in doubt at the others, and wait
	// for each other's locks there.
	c.parts["order"].Shutdown(context.Background())
	delete(c.parts, "order")
	run("the in-doubt table fills",
		chromedp.WaitVisible(chromedp.CSS(`#indoubt tbody tr[data-tx]`)),
		chromedp.WaitVisible(chromedp.CSS(`#txs tbody tr[data-tx]`)),
	)
	if s := text(`#indoubt tbody tr[data-tx]`); !strings.Contains(s, "inventory") || !strings.Contains(s, "order") {
		t.Fatalf("an in-doubt row must name who is in doubt (inventory) and whom it waits for (order): %q", s)
	}
	run("the wait-for graph draws", chromedp.WaitVisible(chromedp.CSS(`#graph g.node`)))
	run("screenshot", shot("console.png", true))

	// A timeline opens from a row.
	run("timeline",
		chromedp.Click(chromedp.CSS(`#indoubt tbody tr[data-tx] button.link`)), // the first: timeline
		chromedp.WaitVisible(chromedp.CSS(`#timeline-table`)),
	)
	id := get("timeline id", chromedp.Evaluate[string](`document.getElementById("tl-id").value`))
	if s := text("#timeline"); id == "" || !strings.Contains(s, id) || !strings.Contains(s, "BEGIN") || !strings.Contains(s, "PREPARED") {
		t.Fatalf("the timeline of %s must show BEGIN and the PREPAREDs: %q", id, s)
	}
	// An action asks first; cancelled, nothing is sent.
	run("retry asks for confirmation",
		chromedp.Click(chromedp.CSS(`#indoubt tbody tr[data-tx] button.link:nth-of-type(2)`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm[open]`)),
	)
	if s := text("#confirm"); !strings.Contains(s, "Resend") {
		t.Fatalf("confirmation dialog: %q", s)
	}
	run("screenshot", shot("console-timeline.png", false))
	run("cancel",
		chromedp.Click(chromedp.CSS(`#confirm-cancel`)),
		chromedp.WaitNotPresent(chromedp.CSS(`#confirm[open]`)),
	)
	if s := text("#toast"); strings.Contains(s, "resent") {
		t.Fatalf("a cancelled retry must not be sent: %q", s)
	}
	// Confirmed, it is sent: PREPARE again to order, which has not voted.
	run("retry, confirmed",
		chromedp.Click(chromedp.CSS(`#indoubt tbody tr[data-tx] button.link:nth-of-type(2)`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm[open]`)),
		chromedp.Click(chromedp.CSS(`#confirm-ok`)),
		chromedp.WaitVisible(chromedp.CSS(`#toast.show`)),
	)
	if s := text("#toast"); !strings.Contains(s, "resent") || !strings.Contains(s, "to order") {
		t.Fatalf("a confirmed retry is sent to the one that has not voted: %q", s)
	}
	c.startService("order")
}
