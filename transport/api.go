package transport

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Backend is what the HTTP API asks of the broker; the broker's Go API
// offers the same operations to programs that embed it.
type Backend interface {
	Publish(ctx context.Context, channel string, data []byte, excludeUser string) (offset uint64, err error)
	SendToUser(ctx context.Context, user string, data []byte) (connections int, err error)
	Broadcast(ctx context.Context, data []byte) (connections int, err error)
	Subscribers(ctx context.Context, channel string) (users []string, err error)
	UserConnections(ctx context.Context, user string) (connections int, err error)
	DisconnectUser(ctx context.Context, user string) (connections int, err error)
	Presence(ctx context.Context, channel string) ([]PresenceMember, error)
	SetChannelCapacity(ctx context.Context, channel string, capacity int) error
}

const (
	apiRequestTimeout = 10 * time.Second
	apiBodyOverhead   = 4096
)

type api struct {
	key     string
	limits  Limits
	backend Backend
	log     *slog.Logger
	mux     *http.ServeMux
}

func newAPI(key string, limits Limits, backend Backend, log *slog.Logger) http.Handler {
	a := &api{key: key, limits: limits, backend: backend, log: log, mux: http.NewServeMux()}
	for name, m := range methods {
		a.mux.HandleFunc("/api/"+name, a.handle(m))
	}
	return a
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a.key == "" {
		apiError(w, http.StatusNotFound, "api_disabled", "the HTTP API is off: start the broker with --api-key")
		return
	}
	if !a.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="switchboard"`)
		apiError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY or X-API-Key: KEY)")
		return
	}
	if _, pattern := a.mux.Handler(r); pattern == "" {
		apiError(w, http.StatusNotFound, "not_found", "no such API method: "+r.URL.Path)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		apiError(w, http.StatusMethodNotAllowed, "method_not_allowed", "API methods take POST with a JSON body")
		return
	}
	a.mux.ServeHTTP(w, r)
}

func (a *api) authorized(r *http.Request) bool {
	given := r.Header.Get("X-API-Key")
	if auth := r.Header.Get("Authorization"); given == "" && auth != "" {
		scheme, token, _ := strings.Cut(auth, " ")
		if strings.EqualFold(scheme, "bearer") || strings.EqualFold(scheme, "apikey") {
			given = strings.TrimSpace(token)
		}
	}
	return given != "" && subtle.ConstantTimeCompare([]byte(given), []byte(a.key)) == 1
}

type apiRequest struct {
	Channel     string          `json:"channel"`
	User        string          `json:"user"`
	Data        json.RawMessage `json:"data"`
	ExcludeUser string          `json:"exclude_user"`
	Capacity    *int            `json:"capacity"`
}

// decode reads the JSON body and checks the fields named in need.
func (a *api) decode(w http.ResponseWriter, r *http.Request, need ...string) (*apiRequest, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, int64(a.limits.MaxDataBytes+apiBodyOverhead))
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	var req apiRequest
	if err := dec.Decode(&req); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			apiError(w, http.StatusRequestEntityTooLarge, CodeDataTooLarge, "request body too large")
			return nil, false
		}
		apiError(w, http.StatusBadRequest, CodeInvalidJSON, "body must be a JSON object: "+err.Error())
		return nil, false
	}
	for _, field := range need {
		switch field {
		case "channel":
			if !ValidChannel(req.Channel) {
				apiError(w, http.StatusBadRequest, CodeInvalidChannel, "channel must be 1-255 bytes of letters, digits and _ - . : @ / =")
				return nil, false
			}
		case "user":
			if !ValidUserID(req.User) {
				apiError(w, http.StatusBadRequest, CodeInvalidUser, "user must be 1-255 bytes of UTF-8 without control characters")
				return nil, false
			}
		case "capacity":
			if req.Capacity == nil || *req.Capacity < 0 {
				apiError(w, http.StatusBadRequest, CodeInvalidFrame, "capacity must be a non-negative integer (0: the namespace default)")
				return nil, false
			}
		case "data":
			if len(req.Data) == 0 {
				apiError(w, http.StatusBadRequest, CodeMissingData, "missing data")
				return nil, false
			}
			if len(req.Data) > a.limits.MaxDataBytes {
				apiError(w, http.StatusRequestEntityTooLarge, CodeDataTooLarge, "data too large")
				return nil, false
			}
		}
	}
	if req.ExcludeUser != "" && !ValidUserID(req.ExcludeUser) {
		apiError(w, http.StatusBadRequest, CodeInvalidUser, "exclude_user must be 1-255 bytes of UTF-8 without control characters")
		return nil, false
	}
	return &req, true
}

// method is one API call: the fields it needs and what it does.
type method struct {
	need []string
	call func(ctx context.Context, b Backend, req *apiRequest) (map[string]any, error)
}

var methods = map[string]method{
	"publish": {[]string{"channel", "data"}, func(ctx context.Context, b Backend, req *apiRequest) (map[string]any, error) {
		offset, err := b.Publish(ctx, req.Channel, req.Data, req.ExcludeUser)
		return map[string]any{"channel": req.Channel, "offset": offset}, err
	}},
	"send": {[]string{"user", "data"}, func(ctx context.Context, b Backend, req *apiRequest) (map[string]any, error) {
		n, err := b.SendToUser(ctx, req.User, req.Data)
		return map[string]any{"user": req.User, "connections": n}, err
	}},
	"broadcast": {[]string{"data"}, func(ctx context.Context, b Backend, req *apiRequest) (map[string]any, error) {
		n, err := b.Broadcast(ctx, req.Data)
		return map[string]any{"connections": n}, err
	}},
	"subscribers": {[]string{"channel"}, func(ctx context.Context, b Backend, req *apiRequest) (map[string]any, error) {
		users, err := b.Subscribers(ctx, req.Channel)
		if users == nil {
			users = []string{}
		}
		return map[string]any{"channel": req.Channel, "users": users}, err
	}},
	"connected": {[]string{"user"}, func(ctx context.Context, b Backend, req *apiRequest) (map[string]any, error) {
		n, err := b.UserConnections(ctx, req.User)
		return map[string]any{"user": req.User, "connected": n > 0, "connections": n}, err
	}},
	"disconnect": {[]string{"user"}, func(ctx context.Context, b Backend, req *apiRequest) (map[string]any, error) {
		n, err := b.DisconnectUser(ctx, req.User)
		return map[string]any{"user": req.User, "connections": n}, err
	}},
	"presence": {[]string{"channel"}, func(ctx context.Context, b Backend, req *apiRequest) (map[string]any, error) {
		members, err := b.Presence(ctx, req.Channel)
		users := make([]map[string]any, len(members))
		for i, m := range members {
			users[i] = map[string]any{"user": m.User, "connections": m.Connections}
			if len(m.Info) > 0 {
				users[i]["info"] = json.RawMessage(m.Info)
			}
		}
		return map[string]any{"channel": req.Channel, "users": users}, err
	}},
	// channel changes a channel's settings for as long as it stays loaded.
	"channel": {[]string{"channel", "capacity"}, func(ctx context.Context, b Backend, req *apiRequest) (map[string]any, error) {
		err := b.SetChannelCapacity(ctx, req.Channel, *req.Capacity)
		return map[string]any{"channel": req.Channel, "capacity": *req.Capacity}, err
	}},
}

func (a *api) handle(m method) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, ok := a.decode(w, r, m.need...)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), apiRequestTimeout)
		defer cancel()
		body, err := m.call(ctx, a.backend, req)
		a.reply(w, err, body)
	}
}

func (a *api) reply(w http.ResponseWriter, err error, body map[string]any) {
	if err != nil {
		status, code := apiStatus(err)
		if status >= http.StatusInternalServerError {
			a.log.Warn("api request failed", "err", err)
		}
		apiError(w, status, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// apiStatus is the HTTP status and error code that answer a Backend error:
// the caller's mistakes are 400, a broker that did not answer in time 503,
// anything else (a bug) 500.
func apiStatus(err error) (status int, code string) {
	switch {
	case errors.Is(err, ErrInvalidChannel):
		return http.StatusBadRequest, CodeInvalidChannel
	case errors.Is(err, ErrInvalidData):
		return http.StatusBadRequest, CodeInvalidJSON
	case errors.Is(err, ErrOutcomeUnknown):
		return http.StatusGatewayTimeout, CodeOutcomeUnknown
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, CodeUnavailable
	default:
		return http.StatusInternalServerError, CodeInternal
	}
}

func apiError(w http.ResponseWriter, status int, code, text string) {
	writeJSON(w, status, map[string]string{"error": text, "code": code})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
