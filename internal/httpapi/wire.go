package httpapi

import "socnet/internal/social"

// The JSON shapes of the API's answers (api/openapi.yaml).

type userJSON struct {
	ID         string `json:"id"`
	FirstName  string `json:"first_name"`
	SecondName string `json:"second_name"`
	Birthdate  string `json:"birthdate"`
	Biography  string `json:"biography"`
	City       string `json:"city"`
}

func toUserJSON(u social.User) userJSON {
	return userJSON{
		ID:         u.ID,
		FirstName:  u.FirstName,
		SecondName: u.SecondName,
		Birthdate:  u.Birthdate.Format(social.DateLayout),
		Biography:  u.Biography,
		City:       u.City,
	}
}

type postJSON struct {
	ID           string `json:"id"`
	Text         string `json:"text"`
	AuthorUserID string `json:"author_user_id"`
}

func toPostJSON(p social.Post) postJSON {
	return postJSON{ID: p.ID, Text: p.Text, AuthorUserID: p.AuthorUserID}
}

type messageJSON struct {
	From string `json:"from"`
	To   string `json:"to"`
	Text string `json:"text"`
}
