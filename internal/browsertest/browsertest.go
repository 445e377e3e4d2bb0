// Package browsertest starts a real headless Chromium for the tests that
// drive web pages: the control plane's page, and the pages that try to
// drive a sidecar's local HTTP API. A test without a browser on the
// machine skips, saying which package to install.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"
)

// Path finds a Chromium or Chrome binary: $CHROME_PATH, then the usual
// names on $PATH; "" when there is none.
func Path() string {
	if p := os.Getenv("CHROME_PATH"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Start starts a headless Chromium with a fresh profile, chromedp's
// default options plus opts, and returns the context of its first tab.
// The browser lives until the test ends. Without a browser the test
// skips.
func Start(t testing.TB, opts ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	chrome := Path()
	if chrome == "" {
		t.Skip("no Chromium found (install Debian's chromium package: apt-get install -y chromium, or set CHROME_PATH); skipping the browser test")
	}
	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // tests may run as root
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(allocOpts, opts...)...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelBrowser)
	// The first Run starts the browser, which lives as long as the
	// context it is given: the tab's own, so that callers may bound their
	// steps with contexts derived from it.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", chrome, err)
	}
	return bctx
}
