package httpapi

import (
	"fmt"
	"net/http"

	"socnet/internal/social"
)

// unreadJSON is the body of GET /dialog/unread.
type unreadJSON struct {
	Total   int                `json:"total"`
	Dialogs []dialogUnreadJSON `json:"dialogs"`
}

// dialogUnreadJSON is one dialog of unreadJSON; UserID is the peer.
type dialogUnreadJSON struct {
	UserID string `json:"user_id"`
	Unread int    `json:"unread"`
}

// errNoCounter answers the unread routes of a server built without a
// counter service.
var errNoCounter = social.Errorf(social.EUNAVAILABLE, "the unread counter service is not configured")

// handleDialogUnread answers with the caller's unread messages per dialog
// and in total, from the counter service. The counter service down is 503.
func handleDialogUnread(counter social.UnreadCounter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if counter == nil {
			writeError(w, r, errNoCounter)
			return
		}
		u, err := counter.Unread(r.Context(), userFrom(r))
		if err != nil {
			writeError(w, r, err)
			return
		}
		out := unreadJSON{Total: u.Total, Dialogs: make([]dialogUnreadJSON, len(u.Dialogs))}
		for i, d := range u.Dialogs {
			out.Dialogs[i] = dialogUnreadJSON{UserID: d.PeerID, Unread: d.Unread}
		}
		encode(w, r, out)
	})
}

// handleDialogRead marks every message from the path's user to the caller as
// read. The read commits with its outbox event; the handler then applies
// that event to the counter service directly, so that the caller's next
// GET /dialog/unread shows it (the relay delivers the same event later, a
// duplicate then). It answers 200 only when both are done. If the counter
// service cannot take the event, the read stays committed, the relay will
// deliver it, and the answer is 503: repeating the request is safe and
// confirms it.
func handleDialogRead(reader social.DialogReader, counter social.UnreadCounter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, err := pathID(r, "user_id")
		if err != nil {
			writeError(w, r, err)
			return
		}
		if reader == nil || counter == nil {
			writeError(w, r, errNoCounter)
			return
		}
		receipt, err := reader.MarkRead(r.Context(), userFrom(r), peer)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := counter.ApplyRead(r.Context(), receipt); err != nil {
			if social.ErrorCode(err) == social.EUNAVAILABLE {
				err = fmt.Errorf("%w: %w", &social.Error{Code: social.EUNAVAILABLE,
					Message: "the dialog is marked read, but the unread counter is not updated yet; repeat the request"}, err)
			}
			writeError(w, r, err)
			return
		}
		writeEmpty(w)
	})
}
