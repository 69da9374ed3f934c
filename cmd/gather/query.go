package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/tlsconf"
)

func runQuery(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("query", "[--addr ADDR] [--top-k N] [--trace [--jaeger URL]] TEXT...", stderr)
	addr := fs.String("addr", "127.0.0.1:7070", "QueryService `address`")
	topK := fs.Uint("top-k", 10, "how many hits to ask for")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	full := fs.Bool("require-full", false, "fail unless every shard answers")
	width := fs.Int("width", 80, "characters of passage text to show per hit (0: none)")
	tlsFlags := tlsconf.AddClientFlags(fs, "tls", "the connection to the QueryService")
	tf := addTraceFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	tlsCfg, err := tlsFlags.Client()
	if err != nil {
		return err
	}
	text := strings.Join(fs.Args(), " ")
	if strings.TrimSpace(text) == "" {
		fs.Usage()
		return fmt.Errorf("query: no query text given")
	}
	creds := insecure.NewCredentials()
	if tlsCfg.Enabled() {
		if creds, err = tlsCfg.Credentials("tls", slog.New(slog.DiscardHandler)); err != nil {
			return err
		}
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	qctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	traceID := ""
	if *tf.on {
		qctx, traceID = tf.start(qctx)
	}
	req := &queryv1.SearchRequest{Query: text, TopK: uint32(*topK)}
	if *full {
		req.PartialPolicy = queryv1.PartialPolicy_PARTIAL_POLICY_REQUIRE_FULL
	}
	resp, err := queryv1.NewQueryServiceClient(conn).Search(qctx, req)
	if err != nil {
		st := status.Convert(err)
		if traceID != "" {
			fmt.Fprintf(stdout, "trace %s\n", traceID)
		}
		return fmt.Errorf("search %s: %s: %s", *addr, st.Code(), st.Message())
	}
	if err := printResponse(stdout, resp, *width); err != nil {
		return err
	}
	if traceID == "" {
		return nil
	}
	return tf.draw(ctx, stdout, traceID, len(resp.GetShards()))
}

func printResponse(w io.Writer, resp *queryv1.SearchResponse, width int) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RANK\tSCORE\tSHARD\tDOC\tYEAR\tPRESIDENT\tTEXT")
	for i, h := range resp.GetHits() {
		fmt.Fprintf(tw, "%d\t%.4f\t%s\t%s\t%s\t%s\t%s\n", i+1, h.GetScore(), h.GetShard(), h.GetDocId(),
			h.GetFields()["year"], h.GetFields()["president"], clip(h.GetText(), width))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	cov := resp.GetCoverage()
	state := "complete"
	if cov.GetDegraded() {
		state = "DEGRADED"
	}
	fmt.Fprintf(w, "\ncoverage: %d of %d shards (%s), %d documents searched, %d matches, took %s\n",
		cov.GetShardsSucceeded(), cov.GetShardsTotal(), state, cov.GetDocumentsSearched(),
		resp.GetTotalMatches(), resp.GetTook().AsDuration().Round(time.Microsecond))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tSTATUS\tREPLICA\tSOURCE\tHITS\tLATENCY\tNOTE")
	for _, s := range resp.GetShards() {
		note := s.GetError()
		if s.GetStoppedEarly() {
			note = "stopped early: top_k complete"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.GetShard(),
			strings.TrimPrefix(s.GetStatus().String(), "SHARD_STATUS_"), s.GetReplica(), source(s), s.GetHits(),
			s.GetLatency().AsDuration().Round(time.Microsecond), note)
	}
	return tw.Flush()
}

// source says which attempt answered for a shard, and how many were made when more than one:
// "primary", "hedge (2 attempts)", "retry (3 attempts)"; "-" from a proxy that does not say.
func source(s *queryv1.ShardResult) string {
	src := strings.ToLower(strings.TrimPrefix(s.GetSource().String(), "ATTEMPT_SOURCE_"))
	if s.GetSource() == queryv1.AttemptSource_ATTEMPT_SOURCE_UNSPECIFIED {
		src = "-"
	}
	if n := s.GetAttempts(); n > 1 {
		src += fmt.Sprintf(" (%d attempts)", n)
	}
	return src
}

// clip shortens s to at most n characters, on rune boundaries.
func clip(s string, n int) string {
	if n <= 0 {
		return ""
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
