package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// failingBackend answers every operation with err.
type failingBackend struct{ err error }

func (f failingBackend) Publish(context.Context, string, []byte, string) (uint64, error) {
	return 0, f.err
}
func (f failingBackend) SendToUser(context.Context, string, []byte) (int, error) { return 0, f.err }
func (f failingBackend) Broadcast(context.Context, []byte) (int, error)          { return 0, f.err }
func (f failingBackend) Subscribers(context.Context, string) ([]string, error)   { return nil, f.err }
func (f failingBackend) UserConnections(context.Context, string) (int, error)    { return 0, f.err }
func (f failingBackend) DisconnectUser(context.Context, string) (int, error)     { return 0, f.err }
func (f failingBackend) Presence(context.Context, string) ([]PresenceMember, error) {
	return nil, f.err
}
func (f failingBackend) SetChannelCapacity(context.Context, string, int) error { return f.err }

// TestAPIStatusOfBackendErrors checks the one place that turns the
// Backend's errors into HTTP statuses: the caller's mistakes are 400, a
// broker that did not answer 503, a bug 500.
func TestAPIStatusOfBackendErrors(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("publish to %q: %w", "a", ErrInvalidChannel), http.StatusBadRequest, CodeInvalidChannel},
		{fmt.Errorf("publish to %q: %w", "a", ErrInvalidData), http.StatusBadRequest, CodeInvalidJSON},
		{fmt.Errorf("channel a: %w: %v", ErrUnavailable, "timeout"), http.StatusServiceUnavailable, CodeUnavailable},
		{fmt.Errorf("broadcast: %w", context.DeadlineExceeded), http.StatusServiceUnavailable, CodeUnavailable},
		{errors.New("channel a: unexpected answer"), http.StatusInternalServerError, CodeInternal},
	} {
		status, code := apiCall(t, failingBackend{c.err}, "publish", `{"channel":"a","data":1}`)
		if status != c.status || code != c.code {
			t.Errorf("backend error %q: %d %s, want %d %s", c.err, status, code, c.status, c.code)
		}
	}
}

// TestAPIRefusesAnInvalidChannel checks that a channel name the protocol
// does not allow is the caller's mistake, 400, on every method that takes
// one, whether the API or the broker notices.
func TestAPIRefusesAnInvalidChannel(t *testing.T) {
	broker := failingBackend{fmt.Errorf("publish to %q: %w", "valid", ErrInvalidChannel)}
	for _, method := range []string{"publish", "subscribers", "presence", "channel"} {
		if status, code := apiCall(t, broker, method, `{"channel":"bad channel","data":1,"capacity":1}`); status != http.StatusBadRequest || code != CodeInvalidChannel {
			t.Errorf("%s of an invalid channel: %d %s, want 400 %s", method, status, code, CodeInvalidChannel)
		}
	}
	if status, code := apiCall(t, broker, "publish", `{"channel":"valid","data":1}`); status != http.StatusBadRequest || code != CodeInvalidChannel {
		t.Errorf("publish refused by the broker: %d %s, want 400 %s", status, code, CodeInvalidChannel)
	}
}

// apiCall posts body to the API method and returns the status and the
// error code of the answer.
func apiCall(t *testing.T, backend Backend, method, body string) (status int, code string) {
	t.Helper()
	api := newAPI("key", Limits{MaxDataBytes: 1024}, backend, slog.New(slog.NewTextHandler(io.Discard, nil)))
	req := httptest.NewRequest(http.MethodPost, "/api/"+method, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer key")
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	var answer struct{ Code string }
	if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil {
		t.Fatalf("%s: answer %q is not JSON: %v", method, rec.Body, err)
	}
	return rec.Code, answer.Code
}

// Each Backend error reaches an API caller as the status that tells it
// whether to retry: a publication of unknown fate must not read as "retry".
func TestAPIStatusOfEachBackendError(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("publish x: %w", ErrInvalidChannel), http.StatusBadRequest, CodeInvalidChannel},
		{fmt.Errorf("publish x: %w", ErrInvalidData), http.StatusBadRequest, CodeInvalidJSON},
		{fmt.Errorf("channel x: %w: timeout", ErrUnavailable), http.StatusServiceUnavailable, CodeUnavailable},
		{fmt.Errorf("channel x: %w: timeout", ErrOutcomeUnknown), http.StatusGatewayTimeout, CodeOutcomeUnknown},
		{errors.New("something else"), http.StatusInternalServerError, CodeInternal},
	} {
		if status, code := apiStatus(tc.err); status != tc.status || code != tc.code {
			t.Errorf("%v: %d %s, want %d %s", tc.err, status, code, tc.status, tc.code)
		}
	}
}
