package transport

import (
	"embed"
	"net/http"
)

// The browser client, its type declarations and the demo page, built into
// the binary so that a broker serves its own client.
//
//go:embed web/switchboard.js web/switchboard.d.ts web/index.html
var web embed.FS

func serveWeb(mux *http.ServeMux) {
	file := func(name, contentType string) http.HandlerFunc {
		body, err := web.ReadFile("web/" + name)
		if err != nil {
			panic(err) // embedded at build time
		}
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", contentType)
			w.Header().Set("Cache-Control", "no-cache")
			_, _ = w.Write(body)
		}
	}
	mux.HandleFunc("GET /switchboard.js", file("switchboard.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /switchboard.d.ts", file("switchboard.d.ts", "application/typescript; charset=utf-8"))
	mux.HandleFunc("GET /{$}", file("index.html", "text/html; charset=utf-8"))
}
