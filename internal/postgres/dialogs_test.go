package postgres_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"socnet/internal/postgres"
	"socnet/internal/social"
)

func TestSendMessageWritesOneOutboxEventInTheSameTransaction(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	a, b := e.mustUser(t, "Анна", "Белова"), e.mustUser(t, "Борис", "Волков")
	m := social.Message{From: a.ID, To: b.ID, Text: "Привет!"}
	if err := e.dialogs.SendMessage(ctx, &m); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	if _, err := uuid.Parse(m.ID); err != nil || m.CreatedAt.IsZero() {
		t.Fatalf("SendMessage set ID %q, CreatedAt %v", m.ID, m.CreatedAt)
	}
	type event struct {
		Aggregate, Kind string
		Payload         []byte
		SameTx          bool
	}
	var ev event
	err := e.admin.QueryRow(ctx, `SELECT o.aggregate, o.kind, o.payload, o.xmin = m.xmin
		FROM outbox o, messages m WHERE m.id = $1`, m.ID).Scan(&ev.Aggregate, &ev.Kind, &ev.Payload, &ev.SameTx)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, `SELECT count(*) FROM outbox`); n != 1 {
		t.Fatalf("%d outbox rows, want 1", n)
	}
	if !ev.SameTx {
		t.Error("the message and its event were written by different transactions")
	}
	if ev.Kind != postgres.OutboxMessageSent || ev.Aggregate != postgres.DialogKey(a.ID, b.ID) ||
		ev.Aggregate != postgres.DialogKey(b.ID, a.ID) {
		t.Errorf("event kind %q aggregate %q", ev.Kind, ev.Aggregate)
	}
	var payload struct {
		EventID   string    `json:"event_id"`
		MessageID string    `json:"message_id"`
		From      string    `json:"from"`
		To        string    `json:"to"`
		SentAt    time.Time `json:"sent_at"`
	}
	if err := json.Unmarshal(ev.Payload, &payload); err != nil {
		t.Fatalf("payload %s: %v", ev.Payload, err)
	}
	if _, err := uuid.Parse(payload.EventID); err != nil {
		t.Errorf("event_id %q: %v", payload.EventID, err)
	}
	if payload.MessageID != m.ID || payload.From != a.ID || payload.To != b.ID || !payload.SentAt.Equal(m.CreatedAt) {
		t.Errorf("payload %s does not describe message %+v", ev.Payload, m)
	}
}

func TestSendMessageErrorsWriteNothing(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	a := e.mustUser(t, "Анна", "Белова")
	tests := []struct {
		name, from, to, text, code, field string
	}{
		{"unknown recipient", a.ID, unknownID, "привет", social.ENOTFOUND, ""},
		{"unknown sender", unknownID, a.ID, "привет", social.ENOTFOUND, ""},
		{"oneself", a.ID, a.ID, "привет", social.EINVALID, "user_id"},
		{"empty text", a.ID, e.mustUser(t, "Б", "Б").ID, "", social.EINVALID, "text"},
		{"long text", a.ID, e.mustUser(t, "В", "В").ID, strings.Repeat("ж", social.MaxMessageLen+1), social.EINVALID, "text"},
		{"malformed recipient", a.ID, "x", "привет", social.EINVALID, "user_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := social.Message{From: tt.from, To: tt.to, Text: tt.text}
			err := e.dialogs.SendMessage(ctx, &m)
			if tt.field != "" {
				wantField(t, err, tt.field)
			} else {
				wantCode(t, err, tt.code)
			}
		})
	}
	if n := e.count(t, `SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM outbox)`); n != 0 {
		t.Errorf("%d messages and events written by refused calls", n)
	}
}

func TestDialog(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	a, b, c := e.mustUser(t, "Анна", "А"), e.mustUser(t, "Борис", "Б"), e.mustUser(t, "Вера", "В")
	var want []social.Message
	for i, pair := range [][2]social.User{{a, b}, {b, a}, {a, c}, {a, b}, {c, b}, {b, a}} {
		m := social.Message{From: pair[0].ID, To: pair[1].ID, Text: "сообщение " + string(rune('0'+i))}
		if err := e.dialogs.SendMessage(ctx, &m); err != nil {
			t.Fatal(err)
		}
		if (pair[0].ID == a.ID || pair[1].ID == a.ID) && (pair[0].ID == b.ID || pair[1].ID == b.ID) {
			want = append(want, m)
		}
	}
	for _, order := range [][2]string{{a.ID, b.ID}, {b.ID, a.ID}} {
		got, err := e.dialogs.Dialog(ctx, order[0], order[1])
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Dialog (-want +got):\n%s", diff)
		}
	}
	got, err := e.dialogs.Dialog(ctx, a.ID, unknownID)
	if err != nil || got == nil || len(got) != 0 {
		t.Errorf("dialog with nobody: %v, %v; want an empty slice", got, err)
	}
	_, err = e.dialogs.Dialog(ctx, a.ID, "x")
	wantField(t, err, "user_id")
}

func TestDialogIsTheNewestCap(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	a, b := e.mustUser(t, "Анна", "А"), e.mustUser(t, "Борис", "Б")
	total := social.DialogListCap + 50
	_, err := e.admin.Exec(ctx, `INSERT INTO messages (id, from_user_id, to_user_id, text, created_at)
		SELECT gen_random_uuid(), CASE WHEN i % 2 = 0 THEN $1::uuid ELSE $2::uuid END,
			CASE WHEN i % 2 = 0 THEN $2::uuid ELSE $1::uuid END, 'm' || i, timestamptz '2024-01-01' + i * interval '1 second'
		FROM generate_series(1, $3::int) i`, a.ID, b.ID, total)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.dialogs.Dialog(ctx, a.ID, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != social.DialogListCap {
		t.Fatalf("%d messages, want DialogListCap=%d", len(got), social.DialogListCap)
	}
	if got[0].Text != "m51" || got[len(got)-1].Text != "m1050" {
		t.Errorf("first %q last %q, want m51 .. m1050 (the newest, oldest first)", got[0].Text, got[len(got)-1].Text)
	}
}
