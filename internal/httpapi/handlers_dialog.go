package httpapi

import (
	"net/http"

	"socnet/internal/social"
)

func handleDialogSend(dialogs social.DialogStore) http.Handler {
	type request struct {
		Text string `json:"text"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		to, err := pathID(r, "user_id")
		if err != nil {
			writeError(w, r, err)
			return
		}
		var req request
		if err := decode(w, r, &req); err != nil {
			writeError(w, r, err)
			return
		}
		if err := social.ValidateMessageText(req.Text); err != nil {
			writeError(w, r, err)
			return
		}
		m := social.Message{From: userFrom(r), To: to, Text: req.Text}
		if err := dialogs.SendMessage(r.Context(), &m); err != nil {
			writeError(w, r, err)
			return
		}
		writeEmpty(w)
	})
}

// handleDialogList answers with the newest social.DialogListCap messages
// between the caller and the user, oldest first.
func handleDialogList(dialogs social.DialogStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		with, err := pathID(r, "user_id")
		if err != nil {
			writeError(w, r, err)
			return
		}
		msgs, err := dialogs.Dialog(r.Context(), userFrom(r), with)
		if err != nil {
			writeError(w, r, err)
			return
		}
		out := make([]messageJSON, len(msgs))
		for i, m := range msgs {
			out[i] = messageJSON{From: m.From, To: m.To, Text: m.Text}
		}
		encode(w, r, out)
	})
}
