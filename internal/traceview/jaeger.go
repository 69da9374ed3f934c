// Package traceview fetches one trace from Jaeger's query API and draws it as a waterfall in the
// terminal: the proxy's span, one bar per shard call on a shared time axis, the attempts of each
// call under it, with hedges, retries, cancellations and deadline cuts marked and the slowest
// shard call highlighted. It is what `gather trace` and `gather query --trace` print, for
// Jaeger builds without a UI (make jaeger builds one from module source, which serves only the
// API).
package traceview

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultJaeger is where `make jaeger` serves the query API.
const DefaultJaeger = "http://127.0.0.1:16686"

// ErrTraceNotFound is wrapped by Fetch's error when Jaeger does not know the trace (yet).
var ErrTraceNotFound = errors.New("trace not found")

// startJaeger is the hint every "cannot reach Jaeger" error ends with.
const startJaeger = "start it with `make jaeger` (or: docker run --rm -p 127.0.0.1:16686:16686 -p 127.0.0.1:4317:4317 " +
	"cr.jaegertracing.io/jaegertracing/jaeger:2.13.0) and run the demo with `make demo-traced`, or give its address with --jaeger"

// Trace is one trace as Jaeger's query API returns it.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Span is one span of a Trace. StartTime is in microseconds since the Unix epoch, Duration in
// microseconds.
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	StartTime     int64       `json:"startTime"`
	Duration      int64       `json:"duration"`
	Tags          []KeyValue  `json:"tags"`
	Logs          []Log       `json:"logs"`
	ProcessID     string      `json:"processID"`
}

// Reference links a span to another: CHILD_OF names its parent.
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// KeyValue is a span tag or a log field; Value is a string, bool or number.
type KeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Log is a span event; its name is the field "event". Timestamp is in microseconds.
type Log struct {
	Timestamp int64      `json:"timestamp"`
	Fields    []KeyValue `json:"fields"`
}

// Process is the service a span came from.
type Process struct {
	ServiceName string `json:"serviceName"`
}

// ParseTraceID checks a W3C trace ID (32 hex digits; Jaeger also shows 16) and returns it in
// lower case.
func ParseTraceID(s string) (string, error) {
	id := strings.ToLower(strings.TrimSpace(s))
	if (len(id) != 32 && len(id) != 16) || strings.Trim(id, "0") == "" {
		return "", fmt.Errorf("trace ID %q: want 32 hex digits (the trace_id of the access log, or what gather query --trace prints)", s)
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", fmt.Errorf("trace ID %q: want 32 hex digits: %w", s, err)
	}
	return id, nil
}

// Fetch gets trace id from the Jaeger query API at base (such as DefaultJaeger) with GET
// /api/traces/{id}. A trace Jaeger does not know is ErrTraceNotFound; a Jaeger that cannot be
// reached, or that does not answer as the query API, is an error naming base and saying how to
// start one.
func Fetch(ctx context.Context, client *http.Client, base, id string) (*Trace, error) {
	u, err := url.Parse(strings.TrimSuffix(base, "/"))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("jaeger address %q: want http://HOST:PORT, like %s", base, DefaultJaeger)
	}
	u = u.JoinPath("api", "traces", id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("jaeger at %s: %w", base, err)
		}
		return nil, fmt.Errorf("jaeger at %s is not reachable (%w): %s", base, err, startJaeger)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("jaeger at %s: reading trace %s: %w", base, id, err)
	}
	var r struct {
		Data   []Trace `json:"data"`
		Errors []struct {
			Code int    `json:"code"`
			Msg  string `json:"msg"`
		} `json:"errors"`
	}
	if jerr := json.Unmarshal(body, &r); jerr != nil {
		return nil, fmt.Errorf("jaeger at %s: GET %s: %s, not the query API's JSON (is that address Jaeger's query port, 16686?): %w",
			base, u.Path, resp.Status, jerr)
	}
	if resp.StatusCode == http.StatusNotFound || (resp.StatusCode == http.StatusOK && len(r.Data) == 0) {
		return nil, fmt.Errorf("jaeger at %s: trace %s: %w (spans reach Jaeger a few seconds after the query; "+
			"is the proxy exporting to it, OTEL_EXPORTER_OTLP_ENDPOINT as in make demo-traced?)", base, id, ErrTraceNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		msg := resp.Status
		if len(r.Errors) > 0 {
			msg += ": " + r.Errors[0].Msg
		}
		return nil, fmt.Errorf("jaeger at %s: trace %s: %s", base, id, msg)
	}
	return &r.Data[0], nil
}

// tag returns the value of a span's tag, or nil.
func (s *Span) tag(key string) any {
	for _, kv := range s.Tags {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

func (s *Span) tagString(key string) string {
	switch v := s.tag(key).(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return fmt.Sprint(int64(v))
	default:
		return fmt.Sprint(v)
	}
}

func (s *Span) tagBool(key string) bool {
	v, _ := s.tag(key).(bool)
	return v
}

// grpcCodes are the canonical names of gRPC status codes, as OpenTelemetry's
// rpc.response.status_code has them, by number (the older rpc.grpc.status_code).
var grpcCodes = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// statusCode returns the gRPC status of an RPC span by its canonical name (DEADLINE_EXCEEDED),
// from rpc.response.status_code (otelgrpc today) or rpc.grpc.status_code (before), or "".
func (s *Span) statusCode() string {
	if c := s.tagString("rpc.response.status_code"); c != "" {
		return c
	}
	c := s.tagString("rpc.grpc.status_code")
	if n, err := strconv.Atoi(c); err == nil && n >= 0 && n < len(grpcCodes) {
		return grpcCodes[n]
	}
	return c
}

// parent returns the span ID of the span's parent, or "".
func (s *Span) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

func (s *Span) start() time.Time { return time.UnixMicro(s.StartTime) }

func (s *Span) end() time.Time { return time.UnixMicro(s.StartTime + s.Duration) }

// event returns the name of a log: its "event" field.
func (l *Log) event() string {
	for _, f := range l.Fields {
		if f.Key == "event" {
			if s, ok := f.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}

func (l *Log) field(key string) string {
	for _, f := range l.Fields {
		if f.Key == key {
			return fmt.Sprint(f.Value)
		}
	}
	return ""
}

// Wait fetches trace id from Jaeger at base until it holds the query's span and at least shards
// shard calls, polling every interval: spans reach Jaeger in batches (every 5 s by default), the
// shard calls' possibly apart from the query's. It returns the trace once complete; when ctx
// ends first, the last trace fetched (incomplete, with a nil error) if there was one, else the
// last error. Errors other than ErrTraceNotFound end the wait at once.
func Wait(ctx context.Context, client *http.Client, base, id string, shards int, interval time.Duration) (*Trace, error) {
	var (
		last     *Trace
		notFound error
	)
	for ctx.Err() == nil {
		t, err := Fetch(ctx, client, base, id)
		switch {
		case err == nil:
			last = t
			if t.complete(shards) {
				return t, nil
			}
		case ctx.Err() != nil:
		case errors.Is(err, ErrTraceNotFound):
			notFound = err
		default:
			return nil, err
		}
		timer := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			timer.Stop()
		case <-timer.C:
		}
	}
	switch {
	case last != nil:
		return last, nil
	case notFound != nil:
		return nil, notFound
	}
	return nil, fmt.Errorf("jaeger at %s: trace %s: %w", base, id, ctx.Err())
}

// complete reports whether t holds a QueryService server span and at least shards shard calls.
func (t *Trace) complete(shards int) bool {
	query, calls := false, 0
	for i := range t.Spans {
		s := &t.Spans[i]
		query = query || s.isQuery()
		if s.tag("gather.shard") != nil {
			calls++
		}
	}
	return query && calls >= shards
}

// isQuery reports whether s is the proxy's server span of a QueryService call.
func (s *Span) isQuery() bool {
	return strings.Contains(s.OperationName, "QueryService/") && s.tagString("span.kind") == "server"
}
