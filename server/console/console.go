// Package console is the coordinator's web console: static HTML, CSS and
// JavaScript (no build step, nothing fetched from the internet) served by
// `dtx serve coordinator` at /console/. The page reads and acts through the
// admin API (/v1/admin/...), with the operator's credentials: the client
// certificate the browser presents, or a bearer token entered once and
// kept in the tab's sessionStorage.
package console

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// Files returns the console's files (index.html, console.js, console.css).
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return sub
}
