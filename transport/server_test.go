package transport

import (
	"net"
	"net/http/httptest"
	"testing"
)

func TestClientIPTrustsOnlyConfiguredProxies(t *testing.T) {
	_, loopback, _ := net.ParseCIDR("127.0.0.1/32")
	s := &Server{opts: Options{TrustedProxies: []*net.IPNet{loopback}}}
	cases := []struct{ remote, forwarded, want string }{
		{"127.0.0.1:5000", "203.0.113.9", "203.0.113.9"},
		{"127.0.0.1:5000", "10.0.0.1, 203.0.113.9", "203.0.113.9"}, // the proxy's own entry is the last
		{"127.0.0.1:5000", "not-an-ip", "127.0.0.1"},
		{"198.51.100.7:5000", "203.0.113.9", "198.51.100.7"}, // not a trusted proxy: header ignored
		{"198.51.100.7:5000", "", "198.51.100.7"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/ws", nil)
		r.RemoteAddr = tc.remote
		if tc.forwarded != "" {
			r.Header.Set("X-Forwarded-For", tc.forwarded)
		}
		if got := s.clientIP(r); got != tc.want {
			t.Errorf("remote %s, X-Forwarded-For %q: got %s, want %s", tc.remote, tc.forwarded, got, tc.want)
		}
	}
}

func TestOriginAllowList(t *testing.T) {
	s := &Server{opts: Options{AllowedOrigins: []string{"https://game.example", "https://*.example.org"}}}
	for origin, want := range map[string]bool{
		"": true, "https://game.example": true, "HTTPS://GAME.EXAMPLE": true, "https://a.example.org": true,
		"https://example.org": false, "http://a.example.org": false, "https://evil.example": false, "https://a.example.org.evil": false,
	} {
		if got := s.originAllowed(origin); got != want {
			t.Errorf("origin %q: %v", origin, got)
		}
	}
}
