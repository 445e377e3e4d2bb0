package meshctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"text/tabwriter"

	"github.com/msgmesh/msgmesh/broker"
)

// setupStreams is "meshctl streams": each registered topic's stream on its
// cluster and the settings in effect, from the sidecar's GET /v1/streams.
func setupStreams(fs *flag.FlagSet) func(context.Context, *env) error {
	httpAddr := httpFlag(fs)
	asJSON := fs.Bool("json", false, "print the sidecar's JSON answer instead of a table")
	return func(ctx context.Context, e *env) error {
		if *asJSON {
			return e.call(ctx, *httpAddr, http.MethodGet, "/v1/streams", nil, "")
		}
		body, err := e.do(ctx, *httpAddr, http.MethodGet, "/v1/streams", nil, "")
		if err != nil {
			return err
		}
		var streams []struct {
			Cluster string `json:"cluster"`
			broker.StreamInfo
			Error string `json:"error"`
		}
		if err := json.Unmarshal(body, &streams); err != nil {
			return fmt.Errorf("the sidecar's answer is not a list of streams: %w", err)
		}
		if len(streams) == 0 {
			_, err := fmt.Fprintln(e.stdout, "no registered topic is on a cluster with streams (NATS JetStream)")
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tCLUSTER\tSTREAM\tCREATED BY\tRETENTION\tMAX AGE\tMAX BYTES\tMAX MSGS\tDISCARD\tSTORAGE\tREPLICAS\tDUPLICATES\tMESSAGES\tCONSUMERS")
		for _, s := range streams {
			if s.Error != "" {
				fmt.Fprintf(tw, "%s\t%s\terror: %s\n", s.Topic, s.Cluster, s.Error)
				continue
			}
			stream, msgs, cons := s.Stream, strconv.FormatUint(s.Messages, 10), strconv.Itoa(s.Consumers)
			if !s.Exists {
				stream, msgs, cons = s.Stream+" (not created yet)", "-", "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n",
				s.Topic, s.Cluster, stream, s.CreatedBy, s.Retention, none(s.MaxAge, "0s"), limit(s.MaxBytes), limit(s.MaxMsgs),
				s.Discard, s.Storage, s.Replicas, none(s.Duplicates, "0s"), msgs, cons)
		}
		return tw.Flush()
	}
}

// none shows v, or "none" when it is zero.
func none(v, zero string) string {
	if v == zero || v == "" {
		return "none"
	}
	return v
}

// limit shows a size or count limit; 0 and -1 are none.
func limit(n int64) string {
	if n <= 0 {
		return "none"
	}
	return strconv.FormatInt(n, 10)
}
