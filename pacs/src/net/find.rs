//! C-FIND at study, series and image level (Study Root and Patient Root information models):
//! patient name with wildcards, patient ID, accession number, study date range, modality and
//! UIDs as keys; the matches come back as typed rows.
//!
//! A limit or the cancel flag ends a query early with C-CANCEL. Nothing here touches the store.

use std::sync::atomic::AtomicBool;

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

use super::dimse::{self, C_FIND_RQ, C_FIND_RSP, Incoming, Link, StatusKind, text};
use super::node::PacsNode;
use super::syntax::{Proposal, UNCOMPRESSED_TRANSFER_SYNTAXES};
use crate::attrs::{int, string};
use crate::error::{Error, Result};

/// The Query/Retrieve information model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryModel {
    #[default]
    StudyRoot,
    /// Needs the patient ID for study-level and lower queries and retrieves on strict peers.
    PatientRoot,
}

impl QueryModel {
    pub fn find_sop_class(self) -> &'static str {
        match self {
            Self::StudyRoot => "1.2.840.10008.5.1.4.1.2.2.1",
            Self::PatientRoot => "1.2.840.10008.5.1.4.1.2.1.1",
        }
    }

    pub fn move_sop_class(self) -> &'static str {
        match self {
            Self::StudyRoot => "1.2.840.10008.5.1.4.1.2.2.2",
            Self::PatientRoot => "1.2.840.10008.5.1.4.1.2.1.2",
        }
    }

    pub fn get_sop_class(self) -> &'static str {
        match self {
            Self::StudyRoot => "1.2.840.10008.5.1.4.1.2.2.3",
            Self::PatientRoot => "1.2.840.10008.5.1.4.1.2.1.3",
        }
    }
}

/// Query/Retrieve level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryLevel {
    Study,
    Series,
    Image,
}

impl QueryLevel {
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Study => "STUDY",
            Self::Series => "SERIES",
            Self::Image => "IMAGE",
        }
    }
}

/// Matching keys of a C-FIND. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FindQuery {
    pub model: QueryModel,
    /// Patient's name; `*` and `?` are wildcards (e.g. `DOE^J*`).
    pub patient_name: String,
    pub patient_id: String,
    pub accession_number: String,
    /// Inclusive study date bounds, YYYYMMDD (either may be empty).
    pub study_date_from: String,
    pub study_date_to: String,
    /// A modality (CT, MR, ...): Modalities in Study at study level, Modality at series level.
    pub modality: String,
    pub study_uid: String,
    pub series_uid: String,
    /// Stop (C-CANCEL) after this many matches.
    pub limit: Option<usize>,
}

impl FindQuery {
    fn date_range(&self) -> String {
        match (self.study_date_from.trim(), self.study_date_to.trim()) {
            ("", "") => String::new(),
            (from, to) if from == to => from.to_owned(),
            (from, to) => format!("{from}-{to}"),
        }
    }
}

/// One study a peer matched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StudyMatch {
    pub study_uid: String,
    pub patient_name: String,
    pub patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_description: String,
    pub modalities: Vec<String>,
    pub series_count: Option<u32>,
    pub instance_count: Option<u32>,
}

/// One series a peer matched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesMatch {
    pub study_uid: String,
    pub series_uid: String,
    pub modality: String,
    pub series_number: Option<i64>,
    pub series_description: String,
    pub body_part_examined: String,
    pub instance_count: Option<u32>,
}

/// One instance a peer matched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceMatch {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub instance_number: Option<i64>,
}

/// Studies matching `query`.
pub fn find_studies(node: &PacsNode, query: &FindQuery, cancel: &AtomicBool) -> Result<Vec<StudyMatch>> {
    let identifier = identifier(query, QueryLevel::Study);
    let rows = find_raw(node, query.model, &identifier, query.limit, cancel)?;
    Ok(rows
        .iter()
        .map(|o| StudyMatch {
            study_uid: s(o, tags::STUDY_INSTANCE_UID),
            patient_name: s(o, tags::PATIENT_NAME),
            patient_id: s(o, tags::PATIENT_ID),
            patient_birth_date: s(o, tags::PATIENT_BIRTH_DATE),
            patient_sex: s(o, tags::PATIENT_SEX),
            study_date: s(o, tags::STUDY_DATE),
            study_time: s(o, tags::STUDY_TIME),
            accession_number: s(o, tags::ACCESSION_NUMBER),
            study_description: s(o, tags::STUDY_DESCRIPTION),
            modalities: multi(o, tags::MODALITIES_IN_STUDY),
            series_count: count(o, tags::NUMBER_OF_STUDY_RELATED_SERIES),
            instance_count: count(o, tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
        })
        .collect())
}

/// Series matching `query` (usually with `study_uid` set).
pub fn find_series(node: &PacsNode, query: &FindQuery, cancel: &AtomicBool) -> Result<Vec<SeriesMatch>> {
    let identifier = identifier(query, QueryLevel::Series);
    let rows = find_raw(node, query.model, &identifier, query.limit, cancel)?;
    Ok(rows
        .iter()
        .map(|o| SeriesMatch {
            study_uid: s(o, tags::STUDY_INSTANCE_UID),
            series_uid: s(o, tags::SERIES_INSTANCE_UID),
            modality: s(o, tags::MODALITY),
            series_number: int(o, tags::SERIES_NUMBER),
            series_description: s(o, tags::SERIES_DESCRIPTION),
            body_part_examined: s(o, tags::BODY_PART_EXAMINED),
            instance_count: count(o, tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
        })
        .collect())
}

/// Instances matching `query` (with `study_uid`, and usually `series_uid`, set).
pub fn find_instances(node: &PacsNode, query: &FindQuery, cancel: &AtomicBool) -> Result<Vec<InstanceMatch>> {
    let identifier = identifier(query, QueryLevel::Image);
    let rows = find_raw(node, query.model, &identifier, query.limit, cancel)?;
    Ok(rows
        .iter()
        .map(|o| InstanceMatch {
            study_uid: s(o, tags::STUDY_INSTANCE_UID),
            series_uid: s(o, tags::SERIES_INSTANCE_UID),
            sop_instance_uid: s(o, tags::SOP_INSTANCE_UID),
            sop_class_uid: s(o, tags::SOP_CLASS_UID),
            instance_number: int(o, tags::INSTANCE_NUMBER),
        })
        .collect())
}

fn s(obj: &InMemDicomObject, tag: Tag) -> String {
    string(obj, tag).unwrap_or_default()
}

fn multi(obj: &InMemDicomObject, tag: Tag) -> Vec<String> {
    obj.get(tag)
        .and_then(|e| e.to_multi_str().ok())
        .map(|v| v.iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect())
        .unwrap_or_default()
}

fn count(obj: &InMemDicomObject, tag: Tag) -> Option<u32> {
    int(obj, tag).and_then(|v| u32::try_from(v).ok())
}

/// The identifier of a query at `level`: matching keys with values, return keys empty.
pub(crate) fn identifier(query: &FindQuery, level: QueryLevel) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag: Tag, vr: VR, value: &str| obj.put(text(tag, vr, value.trim()));
    put(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level.keyword());
    let relational = |value: &str| !value.trim().is_empty();
    match level {
        QueryLevel::Study => {
            put(tags::STUDY_INSTANCE_UID, VR::UI, &query.study_uid);
            put(tags::PATIENT_NAME, VR::PN, &query.patient_name);
            put(tags::PATIENT_ID, VR::LO, &query.patient_id);
            put(tags::PATIENT_BIRTH_DATE, VR::DA, "");
            put(tags::PATIENT_SEX, VR::CS, "");
            put(tags::STUDY_DATE, VR::DA, &query.date_range());
            put(tags::STUDY_TIME, VR::TM, "");
            put(tags::ACCESSION_NUMBER, VR::SH, &query.accession_number);
            put(tags::STUDY_DESCRIPTION, VR::LO, "");
            put(tags::MODALITIES_IN_STUDY, VR::CS, &query.modality);
            put(tags::NUMBER_OF_STUDY_RELATED_SERIES, VR::IS, "");
            put(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, "");
        }
        QueryLevel::Series => {
            put(tags::STUDY_INSTANCE_UID, VR::UI, &query.study_uid);
            put(tags::SERIES_INSTANCE_UID, VR::UI, &query.series_uid);
            put(tags::MODALITY, VR::CS, &query.modality);
            put(tags::SERIES_NUMBER, VR::IS, "");
            put(tags::SERIES_DESCRIPTION, VR::LO, "");
            put(tags::BODY_PART_EXAMINED, VR::CS, "");
            put(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, "");
            // Keys of higher levels only when they constrain (relational query).
            if relational(&query.patient_name) {
                put(tags::PATIENT_NAME, VR::PN, &query.patient_name);
            }
            if relational(&query.accession_number) {
                put(tags::ACCESSION_NUMBER, VR::SH, &query.accession_number);
            }
            if relational(&query.date_range()) {
                put(tags::STUDY_DATE, VR::DA, &query.date_range());
            }
            if relational(&query.patient_id) || query.model == QueryModel::PatientRoot {
                put(tags::PATIENT_ID, VR::LO, &query.patient_id);
            }
        }
        QueryLevel::Image => {
            put(tags::STUDY_INSTANCE_UID, VR::UI, &query.study_uid);
            put(tags::SERIES_INSTANCE_UID, VR::UI, &query.series_uid);
            put(tags::SOP_INSTANCE_UID, VR::UI, "");
            put(tags::SOP_CLASS_UID, VR::UI, "");
            put(tags::INSTANCE_NUMBER, VR::IS, "");
            if relational(&query.patient_id) || query.model == QueryModel::PatientRoot {
                put(tags::PATIENT_ID, VR::LO, &query.patient_id);
            }
        }
    }
    obj
}

/// Runs one C-FIND on its own association and returns the identifiers of the matches.
pub(crate) fn find_raw(
    node: &PacsNode,
    model: QueryModel,
    identifier: &InMemDicomObject,
    limit: Option<usize>,
    cancel: &AtomicBool,
) -> Result<Vec<InMemDicomObject>> {
    let class = model.find_sop_class();
    let mut link = dimse::connect(node, &[Proposal::new(class, &UNCOMPRESSED_TRANSFER_SYNTAXES)], &[], Some(cancel))?;
    let out = find_on(&mut link, class, identifier, limit);
    match out {
        Ok(out) => {
            link.release()?;
            Ok(out)
        }
        Err(e) => {
            let _ = link.release();
            Err(e)
        }
    }
}

/// Runs one C-FIND on an open association (proposing `class`); the link's cancel flag sends
/// C-CANCEL and ends with [`Error::Cancelled`]; `limit` sends C-CANCEL and keeps what came.
pub(crate) fn find_on(
    link: &mut Link<'_>,
    class: &str,
    identifier: &InMemDicomObject,
    limit: Option<usize>,
) -> Result<Vec<InMemDicomObject>> {
    let context = link.context_for(class).cloned().ok_or_else(|| Error::NoPresentationContext {
        peer: link.peer().to_owned(),
        abstract_syntax: class.to_owned(),
        transfer_syntax: None,
    })?;
    let id = link.next_message_id();
    link.watch_cancel(context.id, id);
    link.send_command(context.id, &dimse::request(C_FIND_RQ, id, class, true, Vec::new()))?;
    link.send_data_set(context.id, &dimse::encode_data_set(identifier, &context.transfer_syntax)?)?;
    let mut out = Vec::new();
    let mut limited = false;
    loop {
        let (data_context, command) = match link.receive_command()? {
            Incoming::Command { context, command } => (context, command),
            Incoming::Released => {
                return Err(Error::ConnectionLost {
                    peer: link.peer().to_owned(),
                    detail: "released in the middle of C-FIND".to_owned(),
                });
            }
        };
        let mut data = Vec::new();
        if command.has_data_set() {
            link.receive_data_set(data_context, &mut data)?;
        }
        if command.field() != C_FIND_RSP || command.responded_id() != Some(id) {
            return Err(Error::Network {
                peer: link.peer().to_owned(),
                detail: format!("unexpected command {:#06x} during C-FIND", command.field()),
            });
        }
        let status = command.status().unwrap_or(0xFFFF);
        match dimse::status_kind(status) {
            StatusKind::Pending => {
                if !data.is_empty() && !link.cancel_sent() {
                    out.push(dimse::decode_data_set(&data, &context.transfer_syntax)?);
                }
                if limit.is_some_and(|l| out.len() >= l) && !link.cancel_sent() {
                    limited = true;
                    link.send_cancel()?;
                } else if link.cancel_requested() {
                    link.send_cancel()?;
                }
            }
            StatusKind::Success | StatusKind::Warning => break,
            StatusKind::Cancelled if limited => break,
            StatusKind::Cancelled => return Err(Error::Cancelled),
            StatusKind::Failure => {
                return Err(Error::DimseFailure {
                    peer: link.peer().to_owned(),
                    operation: "C-FIND",
                    status,
                    meaning: dimse::status_meaning(status),
                });
            }
        }
    }
    if !limited && link.cancel_requested() {
        return Err(Error::Cancelled);
    }
    if let Some(l) = limit {
        out.truncate(l);
    }
    Ok(out)
}
