package tests

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestHelpListsEveryFlagWithItsEnvironmentVariable(t *testing.T) {
	out, err := exec.Command(brokerBinary, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, want := range []string{
		"--addr (env SWITCHBOARD_ADDR)", `default "127.0.0.1:8765"`,
		"--api-key (env SWITCHBOARD_API_KEY)",
		"--max-data-bytes (env SWITCHBOARD_MAX_DATA_BYTES)",
		"--outbox-messages (env SWITCHBOARD_OUTBOX_MESSAGES)",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
}

func TestBadConfigurationExitsWithAClearError(t *testing.T) {
	for _, args := range [][]string{
		{"--max-data-bytes", "lots"},
		{"--log-level", "loud"},
		{"--no-such-flag"},
		{"--addr", "256.0.0.1:99999"},
		{"--max-frame-bytes", "0"},
		{"--write-timeout", "0s"},
		{"--channel-replicas", "-1"},
		{"--lookup-rate-limit", "-5"},
	} {
		out, err := exec.Command(brokerBinary, args...).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 || !strings.Contains(string(out), "switchboard") && !strings.Contains(string(out), "flag") {
			t.Errorf("%v: err=%v output=%s", args, err, out)
		}
	}
}

func TestEnvironmentVariablesSetFlags(t *testing.T) {
	t.Setenv("SWITCHBOARD_MAX_DATA_BYTES", "100")
	t.Setenv("SWITCHBOARD_API_KEY", "from-env")
	srv := startServer(t)
	srv.apiKey = "from-env"
	if status, _ := srv.api(t, "connected", map[string]any{"user": "x"}); status != 200 {
		t.Fatalf("API key from the environment not honoured: %d", status)
	}
	c := srv.connect(t, "env")
	c.sendJSON(map[string]any{"type": "message", "channel": "a", "data": strings.Repeat("x", 120)})
	if e := c.expect("error"); e["code"] != "data_too_large" {
		t.Fatalf("got %v", e)
	}
}
